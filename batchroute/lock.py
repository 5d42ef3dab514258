"""RunLock: one batchroute run per database, via an flock'd `<db>.lock` file beside it.

The kernel drops an flock when its holder dies (even on kill -9), so a stale lock file is simply
taken over; the PID written inside is informational. Knows nothing of DuckDB.

The lock (like the journal) belongs to the database's real path: a symlink to the file, a
symlinked folder, a relative path or `a/../db.duckdb` all name the same lock file, so two runs
cannot get past each other by naming the same database differently. (A hard link is another
name the kernel cannot tell us about; DuckDB's own `.wal` beside each name breaks those anyway.)
"""

from __future__ import annotations

import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from .errors import LockHeld


def real_db_path(db_path: str | Path) -> Path:
    """The absolute path of the file `db_path` names, every symlink resolved (the file need
    not exist yet: a first run's symlink to a database still to be created resolves too).
    `..` is taken after the symlink before it, as the kernel does."""
    return Path(os.path.realpath(db_path))


def lock_path(db_path: str | Path) -> Path:
    """The lock file that guards `db_path`: beside the real file, whatever name it is given."""
    p = real_db_path(db_path)
    return p.with_name(p.name + ".lock")


def _parse_holder(text: str) -> tuple[int | None, str | None]:
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    started = parts[1] if len(parts) > 1 else None
    return pid, started


class RunLock:
    """Exclusive, non-blocking lock on a database for the duration of a run.

    Use as ``with RunLock(db_path):``. Raises `LockHeld` (with the holder's PID) when another
    live process holds it. After acquiring, `previous_pid` is the PID a dead holder left in the
    file (a stale lock that was taken over), or None.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.path = lock_path(db_path)
        self.previous_pid: int | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise LockHeld; never blocks."""
        if self._fd is not None:
            raise RuntimeError("RunLock is not re-entrant")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, started = _parse_holder(os.pread(fd, 200, 0).decode("utf-8", "replace"))
            os.close(fd)
            who = f"PID {pid}" if pid is not None else "an unknown process"
            since = f", since {started}" if started else ""
            raise LockHeld(
                f"another batchroute run ({who}{since}) holds the lock on this database "
                f"({self.path})",
                pid=pid,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        stale, _ = _parse_holder(os.pread(fd, 200, 0).decode("utf-8", "replace"))
        self.previous_pid = stale if stale != os.getpid() else None
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {stamp}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the holder line and drop the lock (the file stays: unlinking would race)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
