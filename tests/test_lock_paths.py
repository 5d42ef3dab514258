"""The run lock and the journal follow the database's real path: a symlink, a relative path or
`a/../db.duckdb` naming the same file meets the same lock (real processes) and the same journal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from subprocs import WAIT_S, query, wait_until

from batchroute.journal import Journal, journal_path
from batchroute.lock import lock_path
from batchroute.runner.recover import recover_journal
from batchroute.store import ResultStore
from batchroute.types import AttemptOutcome, AttemptRow, RecordStatus, ResultRow

# Holds the lock until its stdin closes: the test ends it, no timer involved.
_HOLDER = """
import sys
from batchroute.lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""

# Tries the lock once: exit 3 and the holder's PID if refused, exit 0 if it got the lock.
_CONTENDER = """
import sys
from batchroute.errors import LockHeld
from batchroute.lock import RunLock
try:
    RunLock(sys.argv[1]).acquire()
except LockHeld as exc:
    print(exc.pid, exc, sep="\\n")
    sys.exit(3)
print("acquired")
"""


def _layout(tmp: Path) -> Path:
    """tmp/data/db.duckdb (the real file), tmp/link.duckdb → it, tmp/datalink → tmp/data,
    tmp/deep/sub (a real folder), tmp/hop → tmp/data/sub (so hop/.. is tmp/data, not tmp)."""
    data = tmp / "data"
    (data / "sub").mkdir(parents=True)
    (tmp / "deep" / "sub").mkdir(parents=True)
    (tmp / "link.duckdb").symlink_to(data / "db.duckdb")
    (tmp / "datalink").symlink_to(data, target_is_directory=True)
    (tmp / "hop").symlink_to(data / "sub", target_is_directory=True)
    return data / "db.duckdb"


# (name the holder uses, name the contender uses), both relative to tmp (the children's cwd)
_PAIRS = [
    ("data/db.duckdb", "link.duckdb"),  # a symlink to the file
    ("link.duckdb", "data/db.duckdb"),  # …either way round
    ("datalink/db.duckdb", "data/db.duckdb"),  # a symlinked folder
    ("data/db.duckdb", "data/sub/../db.duckdb"),  # a/../db.duckdb
    ("hop/../db.duckdb", "data/db.duckdb"),  # `..` after a symlink: the kernel's meaning
    ("ABS", "data/db.duckdb"),  # absolute vs relative
]


@contextmanager
def _holder(tmp: Path, name: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, name],
        cwd=tmp,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT_S)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _contend(tmp: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CONTENDER, name],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


@pytest.mark.parametrize("exists", [True, False], ids=["db-exists", "first-run"])
@pytest.mark.parametrize(("held_as", "tried_as"), _PAIRS)
def test_another_name_of_the_same_database_meets_the_same_lock(
    tmp_path: Path, held_as: str, tried_as: str, exists: bool
) -> None:
    real = _layout(tmp_path)
    if exists:
        real.write_bytes(b"")
    if held_as == "ABS":
        held_as = str(real)
    real_lock = real.with_name("db.duckdb.lock")
    with _holder(tmp_path, held_as) as holder:

        def holding() -> bool:
            assert holder.poll() is None, "the holder exited early"
            return real_lock.exists() and real_lock.read_text().split()[:1] == [str(holder.pid)]

        wait_until(holding, "the holder to take the lock on the real path", poll=0.005)
        refused = _contend(tmp_path, tried_as)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        pid, message = refused.stdout.splitlines()[:2]
        assert pid == str(holder.pid)
        assert f"PID {holder.pid}" in message
        assert holder.stdin is not None
        holder.stdin.close()  # let the holder go: the lock is free again
        assert holder.wait(timeout=WAIT_S) == 0
    again = _contend(tmp_path, tried_as)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(p.name for p in real.parent.iterdir() if p.name.endswith(".lock")) == [
        "db.duckdb.lock"
    ]
    assert not list(tmp_path.glob("*.lock"))  # none beside the symlink


def test_lock_and_journal_paths_are_those_of_the_real_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    names = ["link.duckdb", "datalink/db.duckdb", "data/sub/../db.duckdb", "hop/../db.duckdb"]
    for name in [*names, str(real), "data/db.duckdb"]:
        assert lock_path(name) == real.with_name("db.duckdb.lock"), name
        assert journal_path(name) == real.with_name("db.duckdb.journal"), name
        assert lock_path(name).is_absolute()


def _rows(key: str) -> tuple[AttemptRow, ResultRow]:
    now = datetime(2026, 5, 28, 12, 0, 0, 123456, tzinfo=UTC)
    cost = Decimal("0.000123456789")
    att = AttemptRow("run1", "t", key, 1, "mid", "m", now, 5, 200, AttemptOutcome.OK)
    att.cost_usd = cost
    res = ResultRow("t", key, "run1", 1, RecordStatus.DONE, cost_usd=cost, attempts=1)
    res.created_at = now
    return att, res


def test_a_journal_written_through_a_symlink_is_replayed_through_the_real_name(
    tmp_path: Path,
) -> None:
    """A run given `--db link.duckdb` is killed; the next one is given the real path (or the
    other way round): its rows are found and replayed, not left beside the symlink."""
    real = _layout(tmp_path)
    store = ResultStore(real)
    store.migrate()
    journal = Journal(tmp_path / "link.duckdb")
    journal.open()
    for row in _rows("a"):
        journal.append(row)
    del journal  # killed: no close
    assert not list(tmp_path.glob("link.duckdb.journal*"))
    assert recover_journal(store) == 1
    assert query(real, "SELECT record_key FROM results") == [("a",)]
    assert not [p for p in os.listdir(real.parent) if ".journal" in p]
