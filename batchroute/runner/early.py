"""The start's pass over the input, begun as soon as the store is open (issue 11).

`open_lookup` (the input's lines hashed, joined with the store's results, the keys of the lines
that did not match read and joined) took 0.2-0.3 s of a 10k-record run's start, and ran after
the earlier runs' reservations, the budget's reads, the catalogue and the baseline, one after
the other. What it needs comes from the job file alone (the line salt: prompt, parameters and
id field; the final statuses: the run's overrides), so it runs in a thread beside them, and
DuckDB's joins and the journal-free steps share the two cores.

On a job's first run the first calls need not wait for the pass at all (issue 11): the thread
reads the input's first `HEAD_LINES` lines into a `Head` first, decided in memory (nothing is
final yet; a key seen on an earlier line is a duplicate, as the pass says), and the run feeds
them while the whole pass goes on; the feed goes on from the pass's answers where it is (a
line's verdict depends only on the lines before it).

What the pass must not miss is a result those steps make final before the first record is
admitted: of them, only collecting the batches earlier runs left open writes results
(`Lane.collect_earlier`). When there were any, the pass is made again after them, as before.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable
from dataclasses import dataclass

from batchroute.errors import StoreError
from batchroute.prompt import line_salt, request_params
from batchroute.runner.resume import Head, InputScan, open_lookup
from batchroute.spec import JobSpec
from batchroute.store import ResultStore
from batchroute.types import RecordStatus

SWITCH_S = 0.0005  # the GIL's switch interval while the pass runs beside the set-up
# A fresh run's first lines, fed before the whole pass is made (it begins once a queue is
# full, and takes ~0.1-0.3 s for 10k lines): the first calls and a full queue at the usual
# concurrency (256 + 1,024), few enough to read in a few ms; held until the pass is taken.
HEAD_LINES = 2048


@dataclass(slots=True)
class Passes:
    """What the run feeds from: `first` (the whole pass, or a fresh run's `Head`) and, when
    `first` is a head that is not the whole input, `rest` (the pass, taken by the feeder)."""

    first: InputScan | Head
    rest: StartScan | None = None


def _settle(fut: asyncio.Future[Head], outcome: Head | BaseException) -> None:
    if not fut.done():
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


class StartScan:
    """One run's `open_lookup`, started early (`begin`) and taken once (`take`). `aclose`
    closes whatever it opened that the run did not take, even a pass still running."""

    def __init__(
        self, store: ResultStore, spec: JobSpec, final_statuses: frozenset[RecordStatus]
    ) -> None:
        self.store = store
        self.spec = spec
        self.final_statuses = final_statuses
        # The plan's `line_salt`, from the same parts (`build_plan` takes the same params).
        self.salt = line_salt(spec.prompt, request_params(spec.request), spec.id_field)
        self._task: asyncio.Future[InputScan | None] | None = None
        self._head: asyncio.Future[Head] | None = None  # a fresh run's first lines
        self._made: list[InputScan] = []  # opened and not taken: closed by `aclose`
        self._closed = False
        # A fresh run's pass behind its head waits for `go_on` (the first calls are out) or
        # for the run's end (`aclose`), so that its Python does not take the GIL from the
        # loop while the calls ramp up.
        self._go = threading.Event()
        self._ending = False
        self._lock = threading.Lock()
        self._history = True
        self._switch: float | None = None  # the interpreter's switch interval, while lowered

    async def beside(self, open_store: Awaitable[None], *, fresh: bool) -> None:
        """Await `open_store`, and begin the pass once it is done; or beside it, when the run
        is `fresh` (runner/start.py: no database yet, no journal waiting to be replayed into
        it): then no result of the job can be final, and the pass needs nothing from the store
        (a job's first run)."""
        if fresh:
            self.begin_fresh()
        try:
            await open_store
        except BaseException:
            await self.aclose()
            raise
        self.begin()

    def begin_fresh(self) -> None:
        """`begin`, for a run with no database and no journal: nothing can be final, and the
        pass does not open the store."""
        self._history = False
        self.begin()

    def begin(self) -> None:
        """Start the pass in a thread; the store must be open (migrated)."""
        if self._task is None:
            # The pass's Python (a key read per line) holds the GIL; every DuckDB statement of
            # the set-up beside it then waited up to the 5 ms switch interval to take it back
            # (open_store 2x slower in a trace). Lowered until the pass is taken.
            self._switch = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_S)
            if self._history:
                self._task = asyncio.ensure_future(asyncio.to_thread(self._opened))
                return
            loop = asyncio.get_running_loop()
            head = self._head = loop.create_future()
            head.add_done_callback(lambda f: f.cancelled() or f.exception())  # if not taken
            self._task = asyncio.ensure_future(asyncio.to_thread(self._fresh, loop, head))

    def _restore(self) -> None:
        if self._switch is not None:
            sys.setswitchinterval(self._switch)
            self._switch = None

    def _opened(self) -> InputScan | None:
        return self._open()

    def _open(self) -> InputScan:
        spec = self.spec
        scan = open_lookup(self.store, spec.name, spec.input, id_field=spec.id_field,
                           salt=self.salt, final_statuses=self.final_statuses,
                           history=self._history)  # fmt: skip
        with self._lock:
            if self._closed:  # the run ended (an error elsewhere) while this pass ran
                scan.close()
            else:
                self._made.append(scan)
        return scan

    def _fresh(
        self, loop: asyncio.AbstractEventLoop, head: asyncio.Future[Head]
    ) -> InputScan | None:
        """A fresh run's thread: the head first (handed to the loop at once), then the whole
        pass unless the head is the whole input."""
        spec = self.spec
        try:
            first = Head(spec.input, id_field=spec.id_field, limit=HEAD_LINES)
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, head, exc)
            raise
        loop.call_soon_threadsafe(_settle, head, first)
        if first.complete:
            return None
        self._go.wait()
        return None if self._ending else self._open()

    def go_on(self) -> None:
        """Let the pass behind a head begin (the feeder calls it once its queue is full, or
        when it needs the pass): until then it waits."""
        self._go.set()

    async def take(self, *, again: bool) -> Passes:
        """The pass begun early, or (`again`: results became final since it began) a new one;
        on a fresh run, its head at once and the pass as `rest`. The caller closes what it
        takes."""
        self.begin()
        assert self._task is not None
        if self._head is not None and not again:
            # The pass goes on beside the first calls: the loop keeps the lowered switch
            # interval until it is made, or each of its wake-ups waits up to 5 ms for the GIL.
            self._task.add_done_callback(lambda _: self._restore())
            try:
                first = await self._head
            except BaseException:
                self._restore()
                raise
            return Passes(first, None if first.complete else self)
        try:
            scan = await self._task
        finally:
            self._restore()
        if again or scan is None:  # (None: a fresh run's head was the whole input)
            if scan is not None:
                self._drop(scan)
                await asyncio.to_thread(scan.close)
            scan = await asyncio.to_thread(self._open)
        self._drop(scan)
        return Passes(scan)

    def ready(self) -> bool:
        """Whether the pass behind a head is made (or failed): `rest` would not wait."""
        return self._task is not None and self._task.done()

    async def rest(self) -> InputScan:
        """The pass behind the head `take` gave, once made. The caller closes it."""
        assert self._task is not None
        self.go_on()
        scan = await asyncio.shield(self._task)
        if scan is None:  # pragma: no cover - the run ended (`aclose`) before it was made
            raise StoreError(f"the pass over {self.spec.input} was not made: the run ended")
        self._drop(scan)
        return scan

    def _drop(self, scan: InputScan) -> None:
        with self._lock:
            self._made = [s for s in self._made if s is not scan]

    async def aclose(self) -> None:
        """Wait for a pass still running (a thread cannot be stopped) and close what was not
        taken: its DuckDB and spill directory. Its error, if any, is the run's no more."""
        task = self._task
        self._ending = True
        self._go.set()  # a pass that has not begun never does
        if task is not None and not task.done():
            await asyncio.wait([task])
        self._restore()
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: an error here was the run's only if it took it
        with self._lock:
            self._closed = True
            made, self._made = self._made, []
        for scan in made:
            await asyncio.to_thread(scan.close)
