"""The writer process: applies a run's closed journal segments to DuckDB, off the run's process.

`python -m batchroute.writer DB BUSY_TIMEOUT_S PARENT_PID`, started by the run (the runner's
side is `runner/sink.py`). The run only appends rows to the journal; every 5 s it closes the
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
import json
import os
import queue
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from batchroute.errors import BatchrouteError
from batchroute.store import ResultStore
from batchroute.types import CostFix, RunCounts, RunStatus

_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the run's process dies (Linux), and
    close the race where it died before the request took effect."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(3)


def _cost_fixes(texts: list[str]) -> list[CostFix]:
    # The journal module (and asyncio, which it imports) is loaded only when a segment needs
    # it: ~35 ms of CPU at every start of this process otherwise, for a rare fix line.
    from batchroute.journal import cost_fixes

    return cost_fixes(texts)


def apply_segment(store: ResultStore, path: Path) -> None:
    """Commit one segment in one transaction: read, parsed and cast by DuckDB itself, or, when
    that cannot take it (a key repeated in it, which needs the rows combined first; a line cut
    short; bytes that are not UTF-8), through row objects."""
    if not store.write_segments([path], _cost_fixes):
        from batchroute.journal import read_segment  # rare: see `_cost_fixes`

        store.write(*read_segment(path))


def begin(store: ResultStore, order: dict[str, Any]) -> None:
    """The run's start writes, made here when the run started without the file (design-notes,
    "A run starts while a reader holds the file"): migrate, replay the journal files a killed
    run left (`order["replay"]`, set aside by the run before it opened its own journal), close
    dead runs' rows and insert this run's row. Waits (up to the busy timeout) while another
    process holds the file; the run sends meanwhile, journaling.

    `order["fresh"]`: the run found no database and left an empty file in its place, which
    DuckDB refuses to open, so nobody can write there meanwhile; the database is made beside it
    and renamed over it, whole.
    """
    path = store.path
    target = store
    if order["fresh"]:
        tmp = path.with_name(path.name + ".new")
        for old in (tmp, tmp.with_name(tmp.name + ".wal")):
            old.unlink(missing_ok=True)  # a start killed here before
        target = ResultStore(tmp, write_timeout=store.write_timeout)
    replay = [Path(p) for p in order["replay"]]
    if replay:
        from batchroute.journal import read_journal  # rare: see `_cost_fixes`

        target.migrate()
        target.replay(*read_journal(*replay))
    started = datetime.fromisoformat(order["started_at"])
    target.begin_run(order["run_id"], order["job_name"], order["job_path"], started,
                     order["version"], migrate=not replay)  # fmt: skip
    if order["fresh"]:
        wal = target.path.with_name(target.path.name + ".wal")
        if wal.exists():  # checkpointed at close as a rule; else it goes with its file
            os.replace(wal, path.with_name(path.name + ".wal"))
        os.replace(target.path, path)
        _sync_folder(path.parent)
    for p in replay:
        p.unlink(missing_ok=True)


def end(
    store: ResultStore, order: dict[str, Any], done: Callable[[Path], None] = lambda _: None
) -> dict[str, int]:
    """The run's end, after every segment it sent: its last segments (`order["segments"]`,
    each deleted and answered through `done` once committed), its row's status and counters,
    and the job's status counts for its summary, in one transaction (`runner/sink.end_order`)."""
    counts = RunCounts(**{**order["counts"], "cost_usd": Decimal(order["counts"]["cost_usd"])})
    finished = datetime.fromisoformat(order["finished_at"])
    status = RunStatus(order["status"])
    since = order.get("learn_since")  # absent from an older run's order: nothing raised
    learn_since = None if since is None else date.fromisoformat(since)
    args = (order["run_id"], status, counts, finished, order["job_name"], learn_since)
    last = [Path(p) for p in order.get("segments", ())]
    statuses = store.end_run(*args, last=(last, _cost_fixes)) if last else None
    if statuses is None:  # none, or rows DuckDB's path cannot take: as `apply`, then the end
        for path in last:
            apply_segment(store, path)
        statuses = store.end_run(*args)
        assert statuses is not None
    for path in last:
        path.unlink(missing_ok=True)
        done(path)
    return statuses


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


MAX_TOGETHER = 8  # segments committed in one transaction when that many wait (≤ 8 × 5,000 rows)


def _commands(source: BinaryIO) -> queue.SimpleQueue[bytes | None]:
    """The lines of `source` as they arrive (None at EOF), read by a thread: the loop can then
    see which commands wait already, without blocking. The thread reads the file descriptor
    itself: a thread blocked inside a buffered reader would abort the interpreter's exit."""
    q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    fd = source.fileno()

    def pump() -> None:
        rest = b""
        while chunk := os.read(fd, 1 << 16):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                q.put(line)
        q.put(None)

    threading.Thread(target=pump, name="batchroute-writer-commands", daemon=True).start()
    return q


def serve(store: ResultStore, commands: BinaryIO, replies: BinaryIO) -> int:
    """Apply the segments named on `commands` in order, answering each on `replies`.

    Segments that wait together (the run handed over faster than they were committed) are
    committed in one transaction, then each answered: a transaction costs a fixed ~25 ms of
    CPU however few rows it holds, so a writer that fell behind catches up.
    """

    def say(line: bytes) -> None:
        replies.write(line + b"\n")
        replies.flush()

    q = _commands(commands)
    waiting: deque[bytes | None] = deque()  # read while gathering segments, not handled yet
    while True:
        line = waiting.popleft() if waiting else q.get()
        if line is None:
            return 3  # EOF without quit: the run is gone; write nothing more
        cmd, _, arg = line.partition(b" ")
        if cmd == b"quit":
            say(b"bye")
            return 0
        if cmd in (b"begin", b"finish"):
            code = _order(store, cmd, json.loads(arg), say)
            if code is not None:
                return code
            continue
        if cmd != b"apply":
            say(b"err writer process: unknown command " + cmd[:40])
            return 2
        args = [arg]
        while len(args) < MAX_TOGETHER and not waiting and not q.empty():
            nxt = q.get()
            if nxt is not None and nxt.startswith(b"apply "):
                args.append(nxt[len(b"apply ") :])
            else:
                waiting.append(nxt)
        try:
            _apply(store, [Path(os.fsdecode(a)) for a in args], lambda a: say(b"ok " + a), args)
        except BatchrouteError as exc:
            say(b"err " + str(exc).replace("\n", " ").encode())
            return 1
        except Exception as exc:  # noqa: BLE001 - any other failure: the run must hear it
            say(f"err writing results failed: {exc}".replace("\n", " ").encode())
            return 1


def _order(
    store: ResultStore, cmd: bytes, order: dict[str, Any], say: Callable[[bytes], None]
) -> int | None:
    """`begin` (answered `ok <marker>`; None: go on) or `finish` (answered `bye <counts>`;
    0: end). A failure answers `err <message>` and ends (1): after a failed `finish` the
    run closes its row itself, as it did before the writer could."""
    try:
        if cmd == b"begin":
            begin(store, order)
            say(b"ok " + os.fsencode(order["marker"]))
            return None
        counts = end(store, order, lambda path: say(b"ok " + os.fsencode(path)))
    except BatchrouteError as exc:
        say(b"err " + str(exc).replace("\n", " ").encode())
        return 1
    say(b"bye " + json.dumps(counts).encode())
    return 0


def _apply(
    store: ResultStore, paths: list[Path], done: Callable[[bytes], None], args: list[bytes]
) -> None:
    """Commit `paths` (together when DuckDB's path takes them all, else one by one), delete
    each and answer for it (`done`), in order."""
    if len(paths) == 1 or not store.write_segments(paths, _cost_fixes):
        for path, arg in zip(paths, args, strict=True):
            apply_segment(store, path)
            path.unlink(missing_ok=True)
            done(arg)
        return
    for path, arg in zip(paths, args, strict=True):
        path.unlink(missing_ok=True)
        done(arg)


KILL_ENV = "BATCHROUTE_TEST_KILL_AT"  # as `runner/once.py`'s; read here without importing it


def _kill_after_commit() -> Callable[[], None] | None:
    """A test hook, None unless `BATCHROUTE_TEST_KILL_AT=writer-committed:N`: after this
    process's Nth COMMIT and before its checkpoint (the rows are in DuckDB's WAL only, their
    segments still on disk), kill the run and this process with SIGKILL, as a `kill -9` of the
    run can land there; no signal from outside hits that moment reliably."""
    point, _, nth = os.environ.get(KILL_ENV, "").partition(":")
    if point != "writer-committed":
        return None
    left = [int(nth or 1)]

    def hook() -> None:
        left[0] -= 1
        if left[0] == 0:
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main(argv: list[str], commands: BinaryIO | None = None, replies: BinaryIO | None = None) -> int:
    """Serve until `quit`, `finish` or EOF, then end the process (never returns). `commands`
    and `replies` default to stdin and stdout; a writer forked from the run's process
    (`runner/fork.py`) passes its own pipes, never the run's buffered stdio."""
    db, timeout, parent = argv
    _die_with(int(parent))
    # Ctrl-C is the run's to handle (it says when to stop); this process ends on `quit`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = ResultStore(
        db, write_timeout=float(timeout), keep_instance=True, after_commit=_kill_after_commit()
    )
    code = serve(store, commands or sys.stdin.buffer, replies or sys.stdout.buffer)
    # Every answer is flushed and every transaction committed and detached: skip the
    # interpreter's teardown (0.06-0.16 s with DuckDB loaded, measured), which the run's end
    # would wait for (issue 11). After EOF (the run died) there is nothing to flush either.
    # A forked writer must never run the run's own teardown (atexit, its buffered stdout).
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
