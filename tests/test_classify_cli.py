"""`batchroute classify`, the cost dial and experiments through the real CLI (issue 12).

Every check runs `python -m batchroute` in a subprocess against the built-in simulator
(`--simulate`) and reads the DuckDB file it leaves: the tier `classify` prints is the tier the
run records, the dry run quotes what the run sends, a record's tier and arm do not depend on how
far an earlier run got, and every row a record gets carries its arm.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from factories import write_job, write_jsonl

from batchroute.split import in_experiment

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "mixed.jsonl"
TIERS = {  # one model a tier: a failure is final, the tier recorded is where it started
    "budget": ["meta-llama/llama-3.1-8b-instruct"],
    "mid": ["openai/gpt-4o-mini"],
    "standard": ["openai/gpt-4o"],
    "premium": ["anthropic/claude-sonnet-4.5"],
}
SEED, SHARE = 7, 0.2


def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "batchroute", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    base = [json.loads(line)["prompt"] for line in SAMPLE.read_text().splitlines()]
    return [{"id": f"r{i:04d}", "prompt": f"{rng.choice(base)} (case {i})"} for i in range(n)]


def _job(
    tmp_path: Path, n: int, policy: dict[str, float] | None = None, classifier: str = "learned"
) -> Path:
    write_jsonl(tmp_path / "in.jsonl", _records(n))
    return write_job(
        tmp_path,
        task=None,
        prompt={"user": "{prompt}"},
        tiers=TIERS,
        classifier=classifier,
        routing_policy=(policy or {"strong_share": 0.4}) if classifier == "learned" else None,
        experiment={"share": SHARE, "tier_shift": 1, "seed": SEED},
        quality=["empty"],
        limits={"max_attempts": 1, "max_escalations": 0, "concurrency": 8},
    )


def _classified(out: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["key"]: r for r in rows}


def _recorded(db: Path) -> dict[str, tuple[str, str | None, str]]:
    rows = _query(db, "SELECT record_key, tier, arm, status FROM results")
    return {k: (t, a, s) for k, t, a, s in rows}


@pytest.mark.parametrize(
    "policy", [{"strong_share": 0.4}, {"max_cost_ratio": 0.3}], ids=["share", "cost"]
)
def test_classify_prints_the_tier_and_arm_the_run_records(
    tmp_path: Path, policy: dict[str, float]
) -> None:
    """The run prices with the simulator's /models, the dry run and classify with the
    shipped catalogue: with max_cost_ratio λ agrees as long as the prices do."""
    job = _job(tmp_path, 150, policy)
    cls = _cli("classify", tmp_path / "in.jsonl", "--job", job, cwd=tmp_path)
    assert cls.returncode == 0, cls.stderr
    printed = _classified(cls.stdout)
    assert len(printed) == 150
    row = printed["r0000"]
    assert set(row) >= {"key", "task_type", "complexity", "tier", "score", "reason", "arm"}
    assert row["reason"].startswith("learned:")
    assert 0 <= row["score"] <= 1
    assert list(row["tier_quality"]) == ["budget", "mid", "standard", "premium"]

    db = tmp_path / "r.duckdb"
    dry = _cli("run", job, "--simulate", "--db", db, "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    quote = json.loads(dry.stdout)
    run = _cli("run", job, "--simulate", "--db", db, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    name = next(iter(policy))
    lam = quote["routing"]["lambda"]
    assert (
        f"note: cost dial {name} {policy[name]}: λ {lam:.4g} (quality per USD) on the learned "
        "predictions of 150 records" in run.stderr
    )
    recorded = _recorded(db)
    assert {k: (r["tier"], r["arm"]) for k, r in printed.items()} == {
        k: (t, a) for k, (t, a, _) in recorded.items()
    }
    # The dry run quoted the same split per tier and per arm.
    quoted = {t["tier"]: t["records"] for t in quote["tiers"] if t["records"]}
    assert quoted == dict(Counter(t for t, _, _ in recorded.values()))
    assert quote["arms"] == dict(Counter(a for _, a, _ in recorded.values()))
    assert quote["routing"]["classifier"] == "learned"
    assert quote["routing"]["policy"] == policy
    assert 0 < quote["routing"]["lambda"] < float("inf")
    assert quote["routing"]["scored"] == 150
    # The arms are the seeded function of the key, nothing else.
    for key, (_, arm, _) in recorded.items():
        assert (arm == "shift+1") == in_experiment(SEED, key, SHARE)


def test_a_resumed_job_routes_each_record_as_one_run_would(tmp_path: Path) -> None:
    """λ comes from the whole input: records sent by the second run get the tier (and
    the arm) they would have got in one run, not a tier recalibrated on what was left."""
    job = _job(tmp_path, 120)
    whole = tmp_path / "whole.duckdb"
    one = _cli("run", job, "--simulate", "--db", whole, "--quiet", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    split = tmp_path / "split.duckdb"
    for limit in ("30", "45"):
        part = _cli("run", job, "--simulate", "--db", split, "--limit", limit, "--quiet",
                    cwd=tmp_path)  # fmt: skip
        assert part.returncode == 0, part.stderr
    rest = _cli("run", job, "--simulate", "--db", split, "--quiet", cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    assert len(_query(split, "SELECT DISTINCT run_id FROM results")) == 3
    assert _recorded(split) == _recorded(whole)
    assert len(_recorded(whole)) == 120


def test_every_row_a_record_gets_carries_its_arm(tmp_path: Path) -> None:
    """Done, failed and pending rows all say which arm the record is in. The heuristic spreads
    records over all four tiers (the learned dial leaves budget empty here, so its arms would
    not meet every status)."""
    job = _job(tmp_path, 150, classifier="heuristic")
    scenario = tmp_path / "sc.json"
    scenario.write_text(
        json.dumps(
            {
                "models": {
                    "openai/gpt-4o": {"rate_empty": 1.0},  # standard: answers fail (failed)
                    "anthropic/claude-sonnet-4.5": {"rate_503": 1.0},  # premium: down (pending)
                }
            }
        )
    )
    db = tmp_path / "r.duckdb"
    run = _cli("run", job, "--simulate", "--scenario", scenario, "--db", db, "--quiet",
               cwd=tmp_path)  # fmt: skip
    assert run.returncode in (4, 6), run.stderr
    rows = _recorded(db)
    statuses = Counter(s for _, _, s in rows.values())
    assert statuses["done"] > 0
    assert statuses["failed"] > 0
    assert statuses["pending"] > 0
    for key, (_, arm, status) in rows.items():
        want = "shift+1" if in_experiment(SEED, key, SHARE) else "control"
        assert arm == want, (key, status)
    # Each status is met in some arm (a record moved up lands in standard, which fails, or
    # premium, which is down, or mid, which answers).
    assert {s for _, a, s in rows.values() if a == "shift+1"} >= {"failed", "pending"}
    assert {s for _, a, s in rows.values() if a == "control"} >= {"done"}


def test_classify_without_a_job_uses_the_default_tiers(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"text": "Prove that there are infinitely many primes, rigorously."},
            {"text": "hi"},
            {"prompt": "no text field here"},
            "{not json",
            {"text": "Translate 'good morning' into French."},
        ],
    )
    for classifier in ("heuristic", "learned"):
        got = _cli("classify", src, "--classifier", classifier, cwd=tmp_path)
        assert got.returncode == 4, got.stderr  # two records not classified (test_classify_errors)
        rows = [json.loads(line) for line in got.stdout.splitlines()]
        assert len(rows) == 5
        assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
        assert "missing field 'text'" in rows[2]["error"]
        assert "not valid JSON" in rows[3]["error"]
        good = [rows[i] for i in (0, 1, 4)]
        assert {r["tier"] for r in good} <= {"budget", "mid", "standard", "premium"}
        if classifier == "heuristic":
            assert [r["score"] for r in good] == [None] * 3
            assert [r["tier"] for r in good] == ["premium", "mid", "mid"]  # the default table
        else:
            assert all(0 <= r["score"] <= 1 for r in good)
    other = _cli("classify", src, "--field", "prompt", cwd=tmp_path)
    rows = [json.loads(line) for line in other.stdout.splitlines()]
    assert "error" not in rows[2]
    assert "missing field 'prompt'" in rows[0]["error"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["missing.jsonl"], "missing.jsonl: no such file"),
        (["."], "is a folder"),
        (["in.jsonl", "--job", "nojob.yaml"], "nojob.yaml: cannot read the job file"),
        (["in.jsonl", "--field", "a.b"], "--field 'a.b'"),
        (["in.jsonl", "--classifier", "llm"], "invalid choice: 'llm'"),
    ],
)
def test_classify_bad_arguments_exit_2_naming_them(
    tmp_path: Path, args: list[str], words: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"text": "hi"}])
    got = _cli("classify", *args, cwd=tmp_path)
    assert got.returncode == 2
    assert words in got.stderr
    assert got.stdout == ""


@pytest.mark.parametrize("classifier", ["heuristic", "learned"])
def test_classify_reads_a_pipe_as_it_reads_the_file(tmp_path: Path, classifier: str) -> None:
    """`cat x | batchroute classify /dev/stdin`: the pipe is kept aside once, so the cost dial's
    second pass reads the same lines; the answer is the file's, line for line."""
    src = write_jsonl(tmp_path / "in.jsonl", _records(30))
    args = ["classify", "--field", "prompt", "--classifier", classifier]
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    piped = subprocess.run(
        [sys.executable, "-m", "batchroute", *args[:1], "/dev/stdin", *args[1:]],
        cwd=tmp_path, env=env, input=src.read_text(), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    from_file = _cli(*args[:1], src, *args[1:], cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    assert piped.stdout == from_file.stdout
    assert len(piped.stdout.splitlines()) == 30


def test_the_dry_run_says_when_max_cost_ratio_cannot_be_met(tmp_path: Path) -> None:
    """At an infinite λ each record goes to its cheapest tier, so a ratio below that cost is
    out of reach: the dry run gives the cost ratio it does reach and says the asked one cannot
    be met, rather than quiet routing at many times the ratio asked for."""
    job = _job(tmp_path, 50, {"max_cost_ratio": 0.0001})
    dry = _cli("run", job, "--simulate", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    routing = json.loads(dry.stdout)["routing"]
    assert routing["cost_ratio"] > 0.0001
    text = _cli("run", job, "--simulate", "--dry-run", cwd=tmp_path)
    assert "above max_cost_ratio 0.0001: the weak tiers alone cost more" in text.stdout
    ok = _cli("run", _job(tmp_path, 50, {"max_cost_ratio": 0.5}), "--simulate", "--dry-run",
              "--json", cwd=tmp_path)  # fmt: skip
    # about 0.5: the job's experiment (20 % of records one tier up) spends on top of the dial
    assert 0.45 < json.loads(ok.stdout)["routing"]["cost_ratio"] <= 0.55
    again = _cli("run", tmp_path / "job.yaml", "--simulate", "--dry-run", cwd=tmp_path)
    assert "above max_cost_ratio" not in again.stdout


def test_the_dial_line_of_a_dry_run_with_nothing_to_send_reads_right(tmp_path: Path) -> None:
    job = _job(tmp_path, 20)
    db = tmp_path / "r.duckdb"
    assert _cli("run", job, "--simulate", "--db", db, "--quiet", cwd=tmp_path).returncode == 0
    dry = _cli("run", job, "--simulate", "--db", db, "--dry-run", cwd=tmp_path)
    line = next(x for x in dry.stdout.splitlines() if x.startswith("cost dial"))
    assert line.endswith("λ " + line.split("λ ")[1].split(";")[0] + "; no record to send")
