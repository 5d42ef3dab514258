"""Opening the DuckDB file: one transaction per open, retried while another process holds it.

Knows DuckDB's lock errors and write settings; knows nothing of the tables.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from ..errors import FileHeld, StoreError

T = TypeVar("T")


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return (
        "Could not set lock" in text
        or "Conflicting lock" in text
        # the file is attached by another connection of this process (a write in flight)
        or "Unique file handle conflict" in text
    )


# Write connections attach the file with small row groups and one thread. DuckDB appends each
# committed flush to a table as a new row group, and the checkpoint on close then merges the
# small trailing row groups (vacuum) up to the row-group size: with the default 122,880 rows a
# merge rewrites ~120k rows of ~26 columns in memory at once, so peak RSS grew with the rows
# written (see docs/benchmarks.md, Memory). 8,192-row groups bound every merge; one thread
# keeps the checkpoint from rewriting several of them side by side.
_WRITE_ROW_GROUP_SIZE = 8_192
_WRITE_THREADS = 1
_WRITE_ALIAS = "batchroute_store"


def _open_for_write(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection whose default catalog is `path` (created if missing), for writing."""
    con = duckdb.connect(
        ":memory:", config={"threads": _WRITE_THREADS, "temp_directory": f"{path}.tmp"}
    )
    try:
        literal = str(path).replace("'", "''")
        con.execute(
            f"ATTACH '{literal}' AS {_WRITE_ALIAS} (ROW_GROUP_SIZE {_WRITE_ROW_GROUP_SIZE})"
        )
        con.execute(f"USE {_WRITE_ALIAS}")
    except BaseException:
        con.close()
        raise
    return con


def _retrying(path: Path, timeout: float, open_: Callable[[], T]) -> T:
    """`open_()`, retried with backoff for up to `timeout` seconds while `path` is locked."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return open_()
        except (duckdb.IOException, duckdb.ResourceInUseException) as exc:
            if not _is_lock_error(exc):
                raise StoreError(f"cannot open {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                pid = re.search(r"PID (\d+)", str(exc))
                who = f"process {pid.group(1)}" if pid else "another process"
                raise FileHeld(
                    f"{path} is locked by {who} (a run flushing, or an open SQL "
                    f"client); gave up after {timeout:g}s, try again",
                    pid=int(pid.group(1)) if pid else None,
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc


_FLOCK = "hhqqi"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid


def held_by(path: Path) -> tuple[int, bool] | None:
    """Which other process holds DuckDB's lock on `path`, and whether for writing: (pid,
    True) for a read-write open (nobody else can open the file, even read-only), (pid, False)
    for a read-only one (others may read it too, nobody may write); None when it is free or
    missing. Asks the kernel (DuckDB locks the file with fcntl), taking no lock itself."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        ask = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        got = fcntl.fcntl(fd, fcntl.F_GETLK, ask + bytes(8))
    except OSError:
        return None
    finally:
        os.close(fd)
    kind, _whence, _start, _len, pid = struct.unpack(_FLOCK, got[: struct.calcsize(_FLOCK)])
    if kind == fcntl.F_UNLCK or pid <= 0:
        return None
    return pid, kind == fcntl.F_WRLCK


def describe_process(pid: int) -> str:
    """`process N (its command line)`, as far as /proc tells: for messages naming a holder."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return f"process {pid}"
    cmd = " ".join(w.decode(errors="replace") for w in words if w)
    return f"process {pid} ({cmd[:120]})" if cmd else f"process {pid}"


def connect(path: Path, *, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """Open `path`, retrying with backoff for up to `timeout` seconds while it is locked."""
    if read_only:
        return _retrying(path, timeout, lambda: duckdb.connect(str(path), read_only=True))
    return _retrying(path, timeout, lambda: _open_for_write(path))


def attach_read_only(
    con: duckdb.DuckDBPyConnection, path: Path, alias: str, *, timeout: float
) -> None:
    """ATTACH `path` read-only to `con` as `alias`, retrying while a writer holds it.

    Detach it as soon as the query is done: while it is attached, this process cannot open
    the file for writing (DuckDB allows one handle per file and process).
    """
    if not path.exists():
        raise StoreError(f"{path}: no such database file")
    literal = str(path).replace("'", "''")
    _retrying(path, timeout, lambda: con.execute(f"ATTACH '{literal}' AS {alias} (READ_ONLY)"))


@contextmanager
def transaction(
    path: Path, *, read_only: bool, timeout: float
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open, run one transaction, commit (or roll back) and close."""
    if read_only and not path.exists():
        raise StoreError(f"{path}: no such database file")
    con = connect(path, read_only=read_only, timeout=timeout)
    try:
        con.execute("BEGIN TRANSACTION")
        yield con
        con.execute("COMMIT")
    except duckdb.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc
    finally:
        con.close()


class KeptInstance:
    """One DuckDB instance kept for the life of a process that writes often (the writer
    process), with the file attached only for each transaction.

    Creating a DuckDB instance costs ~20 ms of CPU; attaching the file to a kept one ~3 ms.
    Between transactions the file is detached, so its lock is released and other processes
    (`report`, SQL clients) can open it, as with `transaction`.
    """

    def __init__(self, path: Path, *, after_commit: Callable[[], None] | None = None) -> None:
        self.path = path
        self._con: duckdb.DuckDBPyConnection | None = None
        # A test hook (the writer's `BATCHROUTE_TEST_KILL_AT=writer-committed`): called after
        # each COMMIT and before the detach's checkpoint, the moment whose rows are in the WAL
        # only. None outside the tests.
        self._after_commit = after_commit
        # One transaction at a time: the run calls its store from worker threads, two at once
        # when two batch tiers save batches, and one connection refuses a second caller.
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self, *, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """Attach (retrying while locked), run one transaction, commit or roll back, detach."""
        with self._lock:
            yield from self._transaction(timeout)

    def _transaction(self, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is None:
            self._con = duckdb.connect(
                ":memory:",
                config={"threads": _WRITE_THREADS, "temp_directory": f"{self.path}.tmp"},
            )
        con = self._con
        literal = str(self.path).replace("'", "''")
        _retrying(
            self.path,
            timeout,
            lambda: con.execute(
                f"ATTACH '{literal}' AS {_WRITE_ALIAS} (ROW_GROUP_SIZE {_WRITE_ROW_GROUP_SIZE})"
            ),
        )
        try:
            con.execute(f"USE {_WRITE_ALIAS}")
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            if self._after_commit is not None:
                self._after_commit()
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        finally:
            self._detach()

    def _detach(self) -> None:
        """Let go of the file; if that fails, drop the whole instance (which lets go too)."""
        con = self._con
        assert con is not None
        try:
            con.execute("USE memory")
            con.execute(f"DETACH {_WRITE_ALIAS}")
        except duckdb.Error:
            self._con = None
            con.close()
