"""The real CLI writing into a stdout whose reader has gone (`batchroute run JOB | head -1`).

Each command runs in a subprocess whose stdout is the write end of a pipe with its read end
already closed, so the first write fails with EPIPE, whatever the timing. A run's exit code says
what happened to the run (design §3); the lost printout must not change it, nor write a crash
log or a traceback. `report`, `classify` and the dry run only print: for them a cut-short output
is the outcome, 141 (128 + SIGPIPE) as for any Unix tool.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from factories import texts, write_job, write_jsonl
from subprocs import ENV, query


def into_closed_pipe(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`batchroute ARGS` with a stdout nobody reads any more; TMPDIR is tmp_path, so a crash log
    written anywhere a crash log goes (beside the database or in the temp folder) is found."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "batchroute", *map(str, args)],
            stdout=write, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120,
            env={**ENV, "TMPDIR": str(tmp_path)}, check=False,
        )  # fmt: skip
    finally:
        os.close(write)


def assert_quiet(p: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert "Traceback" not in p.stderr, p.stderr
    assert "unexpected error" not in p.stderr, p.stderr
    assert not list(tmp_path.rglob("batchroute-crash-*"))


def _job(tmp_path: Path, records: list[Any], **overrides: Any) -> Path:
    write_jsonl(tmp_path / "in.jsonl", records)
    return write_job(tmp_path, tiers={"mid": ["openai/gpt-4o-mini"]}, quality=[], **overrides)


def test_a_run_that_reached_its_budget_still_exits_3(tmp_path: Path) -> None:
    job = _job(tmp_path, texts(20), budget={"daily_usd": 0.0005})
    db = tmp_path / "b.duckdb"
    p = into_closed_pipe(tmp_path, "run", job, "--simulate", "--db", db, "--quiet")
    assert p.returncode == 3, p.stderr
    assert_quiet(p, tmp_path)
    statuses = dict(query(db, "SELECT status, count(*) FROM results GROUP BY status"))
    assert statuses["pending"] > 0, statuses  # the cap really stopped it
    assert statuses["done"] > 0, statuses
    assert query(db, "SELECT status FROM runs") == [("budget_exhausted",)]


@pytest.mark.parametrize(("extra", "code"), [(["not json"], 4), ([], 0)])
def test_a_finished_run_exits_with_its_own_code(
    tmp_path: Path, extra: list[str], code: int
) -> None:
    job = _job(tmp_path, [*texts(3), *extra])
    db = tmp_path / "f.duckdb"
    p = into_closed_pipe(tmp_path, "run", job, "--simulate", "--db", db)
    assert p.returncode == code, p.stderr
    assert_quiet(p, tmp_path)
    assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(3,)]


@pytest.mark.parametrize("what", ["dry-run", "classify"])
def test_commands_that_only_print_exit_141_quietly(tmp_path: Path, what: str) -> None:
    """As `report` does (tests/test_report.py): the output was all they were for."""
    job = _job(tmp_path, texts(3))
    args: list[str | Path] = (
        ["run", job, "--dry-run", "--db", tmp_path / "d.duckdb"]
        if what == "dry-run"
        else ["classify", tmp_path / "in.jsonl"]
    )
    p = into_closed_pipe(tmp_path, *args)
    assert p.returncode == 141, p.stderr
    assert p.stderr == ""
    assert_quiet(p, tmp_path)


def test_a_run_whose_stdout_is_full_still_exits_3_and_says_why_once(tmp_path: Path) -> None:
    """Not a closed pipe but a stdout that fails (ENOSPC: /dev/full). The run's outcome still
    decides the exit code; one line on stderr says the summary was lost (exit 1 and a crash
    log before, for a run that had done its work)."""
    job = _job(tmp_path, texts(20), budget={"daily_usd": 0.0005})
    db = tmp_path / "b.duckdb"
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "batchroute", "run", str(job), "--simulate", "--db", str(db),
             "--quiet"],
            stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120,
            env={**ENV, "TMPDIR": str(tmp_path)}, check=False,
        )  # fmt: skip
    assert p.returncode == 3, p.stderr
    assert_quiet(p, tmp_path)
    lines = [ln for ln in p.stderr.splitlines() if "stdout" in ln]
    assert len(lines) == 1, p.stderr
    assert "No space left on device" in lines[0]
    assert query(db, "SELECT status FROM runs") == [("budget_exhausted",)]
