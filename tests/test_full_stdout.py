"""The commands that only print, writing into a stdout that fails otherwise than by a closed
pipe (ENOSPC: `> /dev/full`): one clear line on stderr and a non-zero exit, no crash log and no
traceback (before: exit 1 with "unexpected error" and a crash log, as for a bug).
`run` into /dev/full is in test_closed_stdout.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from factories import texts, write_job, write_jsonl
from subprocs import ENV, run_cli
from test_closed_stdout import assert_quiet


def _into_full(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-m", "batchroute", *map(str, args)],
            stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120,
            env={**ENV, "TMPDIR": str(tmp_path)}, check=False,
        )  # fmt: skip


def _job(tmp_path: Path, records: list[Any]) -> Path:
    write_jsonl(tmp_path / "in.jsonl", records)
    return write_job(tmp_path, tiers={"mid": ["openai/gpt-4o-mini"]}, quality=[])


@pytest.mark.parametrize("command", ["report", "validate", "classify", "dry-run"])
def test_a_printing_command_into_a_full_stdout_says_so_in_one_line(
    tmp_path: Path, command: str
) -> None:
    job = _job(tmp_path, texts(5))
    db = tmp_path / "b.duckdb"
    if command == "report":
        made = run_cli("run", str(job), "--simulate", "--db", str(db), "--quiet")
        assert made.returncode == 0, made.stderr
    args: dict[str, list[str | Path]] = {
        "report": ["report", db],
        "validate": ["validate", job],
        "classify": ["classify", tmp_path / "in.jsonl"],
        "dry-run": ["run", job, "--dry-run", "--db", db],
    }
    p = _into_full(tmp_path, *args[command])
    assert p.returncode != 0, p.stderr
    assert p.returncode not in (141, 0)  # not a reader that left, and not a success
    assert_quiet(p, tmp_path)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert "stdout" in lines[0]
    assert "No space left on device" in lines[0]
