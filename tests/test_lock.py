"""RunLock with real processes: a live holder refuses a second run; a SIGKILLed one does not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchroute.errors import LockHeld
from batchroute.lock import RunLock, lock_path

_CHILD = """
import sys, time
from batchroute.lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _spawn_holder(db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_writes_pid_and_clears_on_release(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with RunLock(db) as lock:
        assert lock.held
        assert lock_path(db).read_text().split()[0] == str(os.getpid())
    assert not lock.held
    assert lock_path(db).read_text() == ""
    with RunLock(db) as again:  # re-acquirable after release
        assert again.previous_pid is None


def test_second_lock_in_same_process_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with RunLock(db), pytest.raises(LockHeld) as info:
        RunLock(db).acquire()
    assert info.value.pid == os.getpid()


def test_live_holder_in_another_process_blocks(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with _spawn_holder(db) as proc:
        try:
            with pytest.raises(LockHeld, match=f"PID {proc.pid}") as info:
                RunLock(db).acquire()
            assert info.value.pid == proc.pid
        finally:
            proc.kill()


def test_lock_of_a_sigkilled_holder_is_taken_over(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with _spawn_holder(db) as proc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lock_path(db).read_text().split()[0] == str(proc.pid)  # stale file left behind
    with RunLock(db) as lock:
        assert lock.previous_pid == proc.pid
        assert lock_path(db).read_text().split()[0] == str(os.getpid())
