"""`run --dry-run` quotes what `run` then sends: the same records, per tier, for every
combination of --retry-failed and --rerun-changed (issue 10: one RunPlan for both).

The real CLI in subprocesses, against the built-in simulator (--simulate), on a database that
already holds done, failed and invalid records, with some done and failed records changed since
(same id, new text), a repeated id, and records no run has seen yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from factories import job_dict, write_jsonl

TIERS = {
    "budget": ["meta-llama/llama-3.1-8b-instruct"],
    "mid": ["openai/gpt-4o-mini"],
    "standard": ["openai/gpt-4o"],
}
ROUTING = {"translation": "budget", "summarization": "mid", "code_generation": "standard"}
TASKS = list(ROUTING)
N = 30
FIRST_LIMIT = 21  # the first run sends 21 records; the last 9 are new to the second


def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "batchroute", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _records(changed: set[int] = frozenset()) -> list[dict[str, Any] | str]:  # type: ignore[assignment]
    out: list[dict[str, Any] | str] = []
    for i in range(N):
        text = f"Item {i}: some text to work on." + (" Now changed." if i in changed else "")
        out.append({"id": f"r{i:03d}", "task": TASKS[i % 3], "text": text})
        if i == 4:
            out.append("{not json")  # an invalid line (its key is its line number)
        if i == 10:
            out.append({"id": "r001", "task": "translation", "text": "a repeated id, done"})
    out.append({"id": "r025", "task": "translation", "text": "a repeated id, not yet sent"})
    return out


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    """A job and a database after a first run: standard's model answers empty (→ failed)."""
    job = job_dict(
        tmp_path,
        task=None,
        task_field="task",
        prompt={"user": "Work on this: {text}"},
        tiers=TIERS,
        routing=ROUTING,
        quality=["empty"],
        limits={"max_attempts": 1, "max_escalations": 0, "concurrency": 4},
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    write_jsonl(tmp_path / "in.jsonl", _records())
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"models": {"openai/gpt-4o": {"rate_empty": 1.0}}}))
    db = tmp_path / "r.duckdb"
    done = _cli(
        "run", path, "--simulate", "--scenario", first, "--db", db, "--limit", FIRST_LIMIT,
        "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr  # failures: the standard tier's records
    statuses = dict(_query(db, "SELECT status, count(*) FROM results GROUP BY ALL"))
    assert statuses["done"] > 0
    assert statuses["failed"] > 0
    assert statuses["invalid"] == 1
    # Since then: two done records (budget, mid) and one failed one (standard) changed.
    write_jsonl(tmp_path / "in.jsonl", _records(changed={0, 1, 2}))
    return path, db


@pytest.mark.parametrize("retry_failed", [False, True], ids=["", "retry-failed"])
@pytest.mark.parametrize("rerun_changed", [False, True], ids=["", "rerun-changed"])
def test_dry_run_quotes_the_records_the_run_sends_per_tier(
    tmp_path: Path, retry_failed: bool, rerun_changed: bool
) -> None:
    job, db = _setup(tmp_path)
    flags = ["--retry-failed"] * retry_failed + ["--rerun-changed"] * rerun_changed
    dry = _cli("run", job, "--simulate", "--db", db, "--dry-run", "--json", *flags, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    quote = json.loads(dry.stdout)
    quoted = {t["tier"]: t["records"] for t in quote["tiers"] if t["records"]}

    before = {r for (r,) in _query(db, "SELECT run_id FROM runs")}
    failed = Counter(t for (t,) in _query(db, "SELECT tier FROM results WHERE status = 'failed'"))
    assert set(failed) == {"standard"}
    run = _cli("run", job, "--simulate", "--db", db, "--quiet", *flags, cwd=tmp_path)
    # Exit 4: failed or invalid records remain in the input (the invalid line always does).
    assert run.returncode == 4, run.stderr
    (run_id,) = {r for (r,) in _query(db, "SELECT run_id FROM runs")} - before
    firsts = _query(
        db,
        f"SELECT tier, count(DISTINCT record_key) FROM attempts WHERE run_id = '{run_id}' "
        "AND attempt_no = 1 GROUP BY ALL",
    )
    sent = dict(firsts)
    assert quoted == sent, (quote, sent)
    invalid = _query(
        db, f"SELECT count(*) FROM results WHERE run_id = '{run_id}' AND status = 'invalid'"
    )[0][0]
    assert quote["invalid"] == invalid

    # What each flag adds, counted independently of both implementations.
    changed_failed = 1  # r002 (standard), failed in the first run; r000, r001 were done
    new = Counter(TASKS[i % 3] for i in range(FIRST_LIMIT, N))
    expected: Counter[str] = Counter({ROUTING[t]: n for t, n in new.items()})
    if retry_failed:
        expected["standard"] += failed["standard"]
    if rerun_changed:
        expected["budget"] += 1
        expected["mid"] += 1
        if not retry_failed:
            expected["standard"] += changed_failed
    assert sent == {t: n for t, n in expected.items() if n}
