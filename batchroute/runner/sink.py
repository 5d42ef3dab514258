"""The run's side of the writer process (`batchroute.writer`): start it, hand it closed journal
segments, read its answers, stop it; and kill it whenever the run leaves any other way.

The process runs in its own session, so a Ctrl-C at the terminal reaches only the run, which
decides when it stops; the kernel kills it when the run dies (see `batchroute.writer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from batchroute.errors import StoreError
from batchroute.runner.cost import learn_since
from batchroute.runner.fork import ForkedWriter, fork_writer
from batchroute.types import RunCounts, RunStatus


def end_order(
    run_id: str, job: str, status: RunStatus, counts: RunCounts, now: datetime, last: Path | None
) -> bytes:
    """`WriterProcess.finish`'s order: the run's row closed as `status` with `counts`, after
    `last`, the run's last segment (if any), in the same transaction (`batchroute.writer.end`)."""
    fields = {**asdict(counts), "cost_usd": str(counts.cost_usd)}
    order = {"run_id": run_id, "job_name": job, "status": str(status), "counts": fields,
             "finished_at": now.isoformat(), "learn_since": learn_since(now.date()).isoformat(),
             "segments": [] if last is None else [str(last)]}  # fmt: skip
    return json.dumps(order).encode()


class WriterProcess:
    """One writer process for one run's database."""

    def __init__(self, db_path: Path, busy_timeout_s: float) -> None:
        self.db_path = db_path
        self.busy_timeout_s = busy_timeout_s
        self._proc: asyncio.subprocess.Process | ForkedWriter | None = None
        self._begun: tuple[Path, asyncio.Future[None]] | None = None  # `begin`'s answer
        self.statuses: dict[str, int] | None = None  # `finish`'s answer: the job's counts
        self._held: bytes | None = None  # a `begin` held back (`begin(hold=True)`)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        argv = [str(self.db_path), repr(float(self.busy_timeout_s)), str(os.getpid())]
        # Forked from this process when it may (one thread): no interpreter start and no
        # `import duckdb` to pay again (~0.15 s of CPU a run; runner/fork.py).
        self._proc = await fork_writer(argv)
        if self._proc is not None:
            return
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "batchroute.writer",
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # The run's own import path: the writer runs the very same batchroute (a source
            # checkout, a path added at run time), whatever the environment says.
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            # Its own pipe, read only when it dies unexpectedly: an inherited stderr would
            # keep the run's own stderr open after the run, and a traceback would print raw.
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )

    def apply(self, segment: Path) -> None:
        """Ask for `segment` to be committed (answered by `reply()` in order)."""
        self._send(b"apply " + os.fsencode(segment))

    def begin(self, marker: Path, order: bytes, *, hold: bool = False) -> asyncio.Future[None]:
        """Ask for the run's start writes (`batchroute.writer.begin`, a JSON line naming
        `marker`) before any segment. The future is done once `reply()` reads its answer, or
        holds the StoreError of the writer's failure. `hold`: sent at `release()`, or before
        the next command, whichever comes first."""
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # never unretrieved
        self._begun = (marker, done)
        self._held = b"begin " + order
        if not hold:
            self.release()
        return done

    def release(self) -> None:
        """Send the `begin` held back (if any)."""
        held, self._held = self._held, None
        if held is not None:
            self._send(held)

    def _answered(self, path: Path | None, error: StoreError | None = None) -> None:
        if self._begun is not None and not self._begun[1].done():
            if error is not None:
                self._begun[1].set_exception(error)
            elif path == self._begun[0]:
                self._begun[1].set_result(None)

    def quit(self) -> None:
        """Ask it to end once the segments sent before are committed."""
        self._send(b"quit")

    def finish(self, order: bytes) -> None:
        """Ask it to close the run's row (`end_order`, a JSON line) once the segments sent
        before are committed, and to end: each of the order's `segments` is answered (`ok`)
        as `apply` is, then its `bye` carries the job's status counts (`statuses`)."""
        self._send(b"finish " + order)

    def _send(self, line: bytes) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        if self._held is not None:  # before any segment, and before the end
            self.release()
        if not self._proc.stdin.is_closing():  # else it has ended: `reply()` says how
            self._proc.stdin.write(line + b"\n")

    async def reply(self) -> Path | None:
        """The next segment committed; None once it said `bye` (to `quit` or `finish`). A
        failed write raises its StoreError, and so does the process ending without a word
        (it was killed)."""
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = (await self._proc.stdout.readline()).rstrip(b"\n")
        word, _, rest = line.partition(b" ")
        if word == b"ok":
            self._answered(path := Path(os.fsdecode(rest)))
            return path
        if word == b"bye":
            if rest:
                self.statuses = {str(k): int(v) for k, v in json.loads(rest).items()}
            return None
        if word == b"err":
            self._answered(None, err := StoreError(rest.decode(errors="replace")))
            raise err
        assert self._proc.stderr is not None
        said = (await self._proc.stderr.read()).decode(errors="replace").strip().splitlines()
        code = await self._proc.wait()
        why = f": {said[-1]}" if said else ""
        self._answered(
            None, err := StoreError(f"the writer process ended unexpectedly (exit {code}){why}")
        )
        raise err

    async def wait(self) -> None:
        if self._proc is not None:
            await self._proc.wait()

    def kill(self) -> None:
        """End it now, whatever it is doing: a transaction cut short is rolled back, and its
        segment stays for the next run's replay."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
