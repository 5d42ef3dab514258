"""The writer process: applies a run's closed journal segments to DuckDB, off the run's process.

`python -m batchroute.writer DB BUSY_TIMEOUT_S PARENT_PID`, started by the run (the runner's
side is `runner/sink.py`). The run only appends rows to the journal; every second it closes the
journal as a numbered segment and sends `apply <path>` on this process's stdin. This process
commits each segment in one transaction (`ResultStore.write`: results, answered attempts, then
cost fixes), deletes it, and answers `ok <path>`; `quit` answers `bye` and ends. A write that
fails (the file held past the busy timeout, a full disk) answers `err <message>` and ends: the
segment stays on disk for the next run's replay.

It never outlives the run: the kernel kills it when the run dies (PR_SET_PDEATHSIG, Linux), and
it ends at once on EOF without `quit` elsewhere. Killed mid-transaction, DuckDB rolls the
transaction back; killed after the commit and before the delete, the replay skips the rows the
database holds. Either way it is the same as a kill -9 of a run that wrote in its own process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import BinaryIO

from batchroute.errors import BatchrouteError
from batchroute.journal import read_segment, read_segment_fields
from batchroute.store import ResultStore

_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the run's process dies (Linux), and
    close the race where it died before the request took effect."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(3)


def apply_segment(store: ResultStore, path: Path) -> None:
    """Commit one segment in one transaction: its fields straight to the columns, or, when a
    key repeats in it (rare: it needs the rows combined first), through row objects."""
    results, attempts, fixes = read_segment_fields(path)
    if len({(r["job_name"], r["record_key"]) for r in results}) == len(results):
        store.write_fields(results, attempts, fixes)
    else:
        store.write(*read_segment(path))


def serve(store: ResultStore, commands: BinaryIO, replies: BinaryIO) -> int:
    """Apply the segments named on `commands` in order, answering each on `replies`."""

    def say(line: bytes) -> None:
        replies.write(line + b"\n")
        replies.flush()

    for raw in commands:
        cmd, _, arg = raw.rstrip(b"\n").partition(b" ")
        if cmd == b"quit":
            say(b"bye")
            return 0
        if cmd != b"apply":
            say(b"err writer process: unknown command " + cmd[:40])
            return 2
        path = Path(os.fsdecode(arg))
        try:
            apply_segment(store, path)
        except BatchrouteError as exc:
            say(b"err " + str(exc).replace("\n", " ").encode())
            return 1
        except Exception as exc:  # noqa: BLE001 - any other failure: the run must hear it
            say(f"err writing results failed: {exc}".replace("\n", " ").encode())
            return 1
        path.unlink(missing_ok=True)
        say(b"ok " + arg)
    return 3  # EOF without quit: the run is gone; write nothing more


def main(argv: list[str]) -> int:
    db, timeout, parent = argv
    _die_with(int(parent))
    # Ctrl-C is the run's to handle (it says when to stop); this process ends on `quit`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = ResultStore(db, write_timeout=float(timeout), keep_instance=True)
    code = serve(store, sys.stdin.buffer, sys.stdout.buffer)
    # Every answer is flushed and every transaction committed and detached: skip the
    # interpreter's teardown (0.06-0.16 s with DuckDB loaded, measured), which the run's end
    # would wait for (issue 11). After EOF (the run died) there is nothing to flush either.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
