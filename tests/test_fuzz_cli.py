"""Issue 9: whatever the input, `batchroute run --simulate` and `batchroute validate` end with a
meaningful exit code (0, 2, 3, 4 or 6), never 1 (an unexpected error) and never a traceback.

Random bytes and random JSON lines go into the input file of a valid job; random bytes and
random YAML mappings (drawn from the job file's own keys, with values of any type) become the
job file. Every example runs the real CLI in a subprocess (about a second each).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import job_dict, texts, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from subprocs import ENV

OK_CODES = {0, 2, 3, 4, 6}
FUZZ = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchroute", *map(str, args)],
        capture_output=True,
        text=True,
        errors="replace",
        env=ENV,
        cwd=cwd,
        timeout=90,
        check=False,
    )


def _assert_sane(p: subprocess.CompletedProcess[str], what: str) -> None:
    out = p.stdout + p.stderr
    assert p.returncode in OK_CODES, f"{what}: exit {p.returncode}\n{out[-3000:]}"
    assert "Traceback" not in out, f"{what}:\n{out[-3000:]}"
    if p.returncode == 2:
        assert p.stderr.strip(), f"{what}: exit 2 without a message"


def _run(tmp: Path, job: Path, limit: int) -> subprocess.CompletedProcess[str]:
    return _cli("run", job, "--simulate", "--limit", str(limit), "--db", tmp / "f.duckdb", cwd=tmp)


def _job(tmp: Path, **overrides: Any) -> Path:
    job = tmp / "job.yaml"
    base = job_dict(tmp, tiers={"mid": ["openai/gpt-4o-mini"]}, quality=["empty"])
    job.write_text(yaml.safe_dump({**base, **overrides}, sort_keys=False), encoding="utf-8")
    return job


# --- values -------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "id", "text", "mid", "budget", "openai/gpt-4o-mini", "{text}", "1e400"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)

# --- input files --------------------------------------------------------------------------------

record_keys = st.sampled_from(["id", "text", "target_lang", "task_type", "x", ""])
records = st.one_of(
    st.dictionaries(record_keys, values, max_size=4),
    st.fixed_dictionaries(
        {"id": values, "text": st.text(max_size=40), "target_lang": st.sampled_from(["French"])}
    ),
    values,
)


def _json_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # NaN/Infinity come out as non-JSON tokens


json_lines = st.lists(
    st.one_of(records.map(_json_line), st.text(max_size=30), st.just("")), max_size=8
).flatmap(
    lambda lines: st.tuples(
        st.just(lines), st.sampled_from(["\n", "\r\n"]), st.booleans()
    )  # line ending, leading BOM
)
input_bytes = st.one_of(
    st.binary(max_size=300),
    json_lines.map(
        lambda t: ("\ufeff" if t[2] else "").encode() + t[1].join(t[0]).encode("utf-8", "replace")
    ),
)


@FUZZ
@given(data=input_bytes, limit=st.integers(min_value=1, max_value=4))
def test_random_input_files_never_crash_run(data: bytes, limit: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = _job(tmp)
        (tmp / "in.jsonl").write_bytes(data)
        _assert_sane(_run(tmp, job, limit), f"input {data[:200]!r}")


# --- job files ----------------------------------------------------------------------------------

SECTIONS: dict[str, list[str]] = {
    "prompt": ["system", "user", "assistant"],
    "request": ["max_tokens", "temperature", "top_p", "seed", "stop", "response_format",
                "extra_body"],
    "limits": ["concurrency", "max_attempts", "max_escalations", "cooldown_after", "queue_size",
               "outage_window", "outage_ratio", "stream", "concurency"],
    "budget": ["daily_usd", "scope", "dayly_usd"],
    "endpoint": ["title", "referer"],
}  # fmt: skip
TOP = ["name", "id_field", "task", "task_field", "classifier", "tiers", "routing",
       "complexity_routing", "quality", "escalate_on", "nonsense"]  # fmt: skip
# Left out on purpose: input/output paths (a random path could be /dev/zero or /etc), the
# endpoint URL and key variable (--simulate replaces them), and timing knobs (rpm, timeouts,
# backoff, grace), which can make a valid job legitimately slow.

tier_values = st.one_of(
    values,
    st.dictionaries(
        st.sampled_from(["budget", "mid", "standard", "x"]),
        st.one_of(
            st.lists(st.sampled_from(["openai/gpt-4o-mini", "qwen/qwen-2.5-7b-instruct", "a/b"])),
            st.fixed_dictionaries({"models": values}, optional={"concurrency": values}),
            values,
        ),
        max_size=3,
    ),
)


@st.composite
def job_mappings(draw: st.DrawFn) -> dict[str, Any]:
    job: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOP), max_size=4, unique=True)):
        job[key] = draw(tier_values if key == "tiers" else values)
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3, unique=True)):
        if draw(st.booleans()):
            job[section] = draw(values)  # the wrong shape altogether
        else:
            keys = draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=3, unique=True))
            job[section] = {k: draw(values) for k in keys}
    return job


job_texts = st.one_of(
    job_mappings().map(lambda m: ("mapping", m)),
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
)


@FUZZ
@given(job_text=job_texts)
def test_random_job_files_never_crash_validate_or_run(job_text: tuple[str, Any]) -> None:
    kind, value = job_text
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        write_jsonl(tmp / "in.jsonl", texts(3))
        job = tmp / "job.yaml"
        if kind == "bytes":
            job.write_bytes(value)
        else:
            base = job_dict(tmp, tiers={"mid": ["openai/gpt-4o-mini"]}, quality=["empty"])
            merged = {**base}
            for key, v in value.items():  # a section drawn as a mapping overrides key by key
                if isinstance(v, dict) and isinstance(base.get(key), dict) and key != "tiers":
                    merged[key] = {**base[key], **v}
                else:
                    merged[key] = v
            try:
                text = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
            except yaml.YAMLError:
                return  # not representable as YAML: nothing to feed
            job.write_text(text, encoding="utf-8")
        what = f"job {value!r}"[:2000]
        _assert_sane(_cli("validate", job, cwd=tmp), what)
        _assert_sane(_run(tmp, job, 2), what)
