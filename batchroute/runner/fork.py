"""The writer process forked from the run's process instead of a fresh interpreter (issue 11).

A fresh `python -m batchroute.writer` costs ~0.15-0.2 s of CPU before its first transaction:
the interpreter, `import duckdb` (~60-80 ms alone) and batchroute's store. The run's process
has all of that imported already, so a fork starts the writer with it loaded (page tables
copied, pages shared until written).

A fork is safe only while the run's process has one thread: a lock held by another thread at
the fork (the GIL's helpers, DuckDB's task scheduler, a thread pool's queue) would stay held
for ever in the child. `fork_writer` therefore forks only when the kernel lists one thread for
this process (`/proc/self/task`: DuckDB's native threads included, which `threading` does not
see) and the caller is the main thread; otherwise (a run started beside other threads, or not
on Linux) it returns None and the run starts the writer the old way. The run starts its writer
before its first thread and before it opens the DuckDB file (`runner/start.py`), so a run from
the CLI forks.

The child leaves the run's state alone: it never returns into the event loop that was running
when it was forked, never flushes the run's buffered stdio (its own pipes are its stdin, stdout
and stderr; `batchroute.writer.main` writes only to them), freezes the inherited objects out of
its garbage collector (no finalizer of the run's objects runs in it) and ends by `os._exit`. Its
signal handlers are reset (the run's Python handlers write to the run's event-loop wake-up
pipe); it starts its own session, as the exec'd writer did (`start_new_session`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable

_PR_SET_NAME = 15
NAME = b"batchroute-wr"  # /proc/PID/comm (ps, top): a forked child keeps the run's cmdline


def _one_thread() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc (not Linux): never fork
        return False


def _protocol(reader: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)


def can_fork() -> bool:
    """Whether this process may fork its writer now (see the module's docstring)."""
    return sys.platform == "linux" and _one_thread()


class ForkedWriter:
    """The parts of `asyncio.subprocess.Process` that `WriterProcess` uses, for a forked
    child: its pid, stdin (a write transport), stdout and stderr (stream readers), its exit
    code once it ended (`returncode`), `wait`, `kill`. Reaped through a pidfd the event loop
    watches (Linux 5.3+), else by a thread blocked in `waitpid` (as asyncio's own watcher)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin: asyncio.WriteTransport
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        self._loop = asyncio.get_running_loop()
        self._ended = self._loop.create_future()
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):  # ENOSYS: an old kernel, valgrind
            self._pidfd = os.pidfd_open(pid)

    async def _connect(self, cmd_w: int, out_r: int, err_r: int) -> None:
        loop = self._loop
        self.stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(cmd_w, "wb", 0))
        for reader, fd in ((self.stdout, out_r), (self.stderr, err_r)):
            await loop.connect_read_pipe(_protocol(reader), os.fdopen(fd, "rb", 0))
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self._reap)
        else:
            threading.Thread(
                target=self._wait_thread, name="batchroute-writer-wait", daemon=True
            ).start()

    def _reap(self) -> None:
        assert self._pidfd is not None
        self._loop.remove_reader(self._pidfd)
        _, status = os.waitpid(self.pid, 0)
        os.close(self._pidfd)
        self._pidfd = None
        self._ended_with(os.waitstatus_to_exitcode(status))

    def _wait_thread(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._ended_with, code)

    def _ended_with(self, code: int) -> None:
        self.returncode = code
        self.stdin.close()
        if not self._ended.done():
            self._ended.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    def kill(self) -> None:
        """SIGKILL, unless it has ended (a pidfd names this very process, never a reused pid)."""
        if self.returncode is not None:
            return
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        else:
            os.kill(self.pid, signal.SIGKILL)


async def fork_writer(argv: list[str]) -> ForkedWriter | None:
    """Fork the writer process for `argv` (`batchroute.writer.main`'s), or None when this
    process may not fork now (`can_fork`). The fork happens before this coroutine first
    suspends: nothing else of the run runs between the check and the fork."""
    if not can_fork():
        return None
    cmd_r, cmd_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(argv, cmd_r, out_w, err_w, keep_closed=(cmd_w, out_r, err_r))
    for fd in (cmd_r, out_w, err_w):
        os.close(fd)
    try:
        proc = ForkedWriter(pid)
        await proc._connect(cmd_w, out_r, err_r)
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # noqa: ASYNC222 - killed: reaped at once
        raise
    return proc


def _child(
    argv: list[str], cmd_r: int, out_w: int, err_w: int, keep_closed: tuple[int, ...]
) -> None:
    code = 1
    try:
        gc.freeze()  # the run's objects: never collected (or finalized) here
        # The interpreter's defaults, as an exec'd writer has them: the run may have raised
        # its collector's thresholds (runner/setup.py) or lowered the GIL's switch interval
        # for its input pass (runner/early.py) at the moment of the fork.
        gc.set_threshold(700, 10, 10)
        sys.setswitchinterval(0.005)
        for fd in keep_closed:
            os.close(fd)
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in signal.valid_signals():
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_NAME, NAME, 0, 0, 0)
        os.dup2(err_w, 2)
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115
        from batchroute import writer

        writer.main(argv, os.fdopen(cmd_r, "rb", 0), os.fdopen(out_w, "wb"))
    except BaseException:  # noqa: BLE001 - said on its stderr, read by the run
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
    finally:
        os._exit(code)
