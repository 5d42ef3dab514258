"""The runner's plain data: options, the report, one record's trail and call, stop control.

A record becomes a `WorkItem` (render, classify, route) in `batchroute.plan`, re-exported here
for the runner's modules.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from batchroute.errors import BatchrouteError, UpstreamError
from batchroute.plan import WorkItem
from batchroute.types import (
    CallSeen,
    Completion,
    CostSource,
    RunCounts,
    RunStatus,
)

__all__ = [
    "Call",
    "Control",
    "IdQueue",
    "IdSeen",
    "RunOptions",
    "RunReport",
    "Trail",
    "WorkItem",
    "utcnow",
]

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _utcnow() -> datetime:
    """Naive UTC, the form every timestamp takes in the store."""
    # = datetime.now(UTC).replace(tzinfo=None) in a quarter of the time (twice per record):
    # integer microseconds, no float seconds for timedelta to split (0.74 vs 1.77 µs)
    return _EPOCH + _MICROSECOND * (time.time_ns() // 1000)


# Naive UTC, the form every timestamp takes in the store; read twice a record. Before Python
# 3.12, `datetime.utcnow` (C, one call) is not deprecated and takes a third of `_utcnow`'s time
# (0.15 vs 0.48 µs; ~4,800 vs ~1,500 instructions: issue 11); from 3.12 it warns on every call.
utcnow: Callable[[], datetime] = datetime.utcnow if sys.version_info < (3, 12) else _utcnow


@dataclass
class RunOptions:
    """Per-invocation settings (the CLI fills these; tests inject clocks and sleeps)."""

    api_key: str = field(default="", repr=False)  # never in a repr, a log or a traceback
    base_url: str | None = None  # overrides the job's endpoint (e.g. the simulator)
    db_path: Path | None = None
    limit: int | None = None
    retry_failed: bool = False
    rerun_changed: bool = False
    budget_usd: Decimal | None = None
    bars: bool = False
    quiet: bool = False
    handle_signals: bool = True
    now: Callable[[], datetime] = utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    monotonic: Callable[[], float] = time.monotonic
    jitter_seed: int | None = None
    log: Callable[[str], None] | None = None
    wait: bool = False  # --wait: poll submitted batches until collected (else exit 7)


@dataclass
class RunReport:
    """What a run did; the CLI turns it into a summary line and an exit code."""

    run_id: str
    job_name: str
    db_path: Path
    status: RunStatus
    counts: RunCounts
    elapsed_s: float
    stale: int = 0
    tiers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    error: BatchrouteError | None = None
    notes: list[str] = field(default_factory=list)
    job_statuses: dict[str, int] = field(default_factory=dict)  # all runs, after this one
    batches_in_flight: int = 0  # Batch API batches the next run collects (exit 7)

    @property
    def job_has_failures(self) -> bool:
        """Failed or invalid records remain among this input's keys: this run's, or earlier
        ones the input still holds (a fixed line has a new key: its old row no longer counts)."""
        c = self.counts
        return bool(c.failed or c.invalid or c.earlier_failed)


@dataclass(slots=True)
class Trail:
    """What happened to one record so far in this run, across models and tiers."""

    attempts: int = 0
    escalations: int = 0
    cost: Decimal = Decimal(0)
    last_error: UpstreamError | None = None
    booked: bool = False  # its result row is written (a later cost fix must update it)
    deferred: bool = False  # its chain was unavailable: it waits for the next run
    escalate: bool = False  # its chain asked for the next tier (quality, or opted-in outage)
    unavailable: bool = False  # some model of the current chain failed for availability
    answer: Completion | None = None  # the last paid answer that failed a quality check


@dataclass(slots=True)
class Call:
    """One call's outcome: a usable completion, or the error that says what to do next."""

    model: str  # the model asked for (the one that served may differ: native fallback)
    started: datetime
    latency_ms: int
    cost: Decimal
    source: CostSource
    completion: Completion | None = None
    error: UpstreamError | None = None
    reserved: Decimal | None = None  # the worst case reserved for it
    generation_id: str | None = None  # known even when the call failed
    flag: tuple[str, str] | None = None  # (error_type, message) of an answer kept despite it
    listed: Decimal | None = None  # its worst case at list prices (before learnt ratios)
    served: str | None = None  # the model the answer names (kept after a quality failure)
    served_listed: Decimal | None = None  # a native fallback's own list-price worst case
    flight: bytes | None = None  # its `in_flight` journal line: the attempt line's first fields


class Control:
    """The run's stop switch, shared by feeder, workers and writer (one event loop)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.stopping = False
        self.interrupted = False
        self.status = RunStatus.RUNNING
        self.error: BatchrouteError | None = None
        self._log = log

    def stop(self, status: RunStatus, error: BatchrouteError | None = None) -> None:
        """Stop dispatching; records not yet sent become `pending`. The first reason wins."""
        if not self.stopping:
            self.stopping = True
            self.status = status
            self.error = error
            if error is not None:
                self._log(f"stopping: {error}")


class IdQueue:
    """Generation ids the client learnt during one loop step, handed to `on_id(token, id)`
    together, in order, at the next step: one callback a step, not one a call (each costs the
    loop a handle and a dispatch, ~1 µs, for an id that is nearly always not needed: issue 11)."""

    __slots__ = ("_got", "_on_id")

    def __init__(self, on_id: Callable[[tuple[str, int], str], None]) -> None:
        self._on_id = on_id
        self._got: list[tuple[tuple[str, int], str]] = []

    def add(self, token: tuple[str, int], generation_id: str) -> None:
        if not self._got:
            asyncio.get_running_loop().call_soon(self._hand_on)
        self._got.append((token, generation_id))

    def _hand_on(self) -> None:
        got, self._got = self._got, []
        for token, generation_id in got:
            self._on_id(token, generation_id)


class IdSeen(CallSeen):
    """A call's `CallSeen` that reports its generation id to `ids` (`IdQueue`: `on_id` one loop
    step after the client sets it; `Book.identified` journals it: a call killed in flight keeps
    it, audit4). Not at once: most answers land in the step their headers came in, and a call
    that has landed needs no id line (one line less a call for the run and the writer process)."""

    __slots__ = ("_id", "_ids", "_token")

    def __init__(self, ids: IdQueue, token: tuple[str, int]):
        self._ids, self._token = ids, token
        self._id: str | None = None

    @property
    def generation_id(self) -> str | None:
        return self._id

    @generation_id.setter
    def generation_id(self, value: str | None) -> None:
        if value and value != self._id:
            self._ids.add(self._token, value)
        self._id = value
