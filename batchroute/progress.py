"""Progress display: one tqdm bar per tier on a TTY; without one (cron), a progress line once a
minute, from `tick` while records flow and from `keep_alive` (a timer) when they do not.

Owns nothing but the display; the runner tells it what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, TextIO

from tqdm import tqdm

from batchroute.types import RecordStatus, RunCounts
from batchroute.usd import usd

LOG_EVERY_S = 60.0
KEEP_ALIVE_MAX_WAIT_S = 5.0  # keep_alive re-reads the clock at least this often


class Progress:
    """Per-tier bars (records/s, cost so far, failures), or periodic plain lines for cron."""

    def __init__(
        self,
        tiers: Iterable[str],
        *,
        bars: bool,
        quiet: bool,
        stream: TextIO | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._monotonic = monotonic
        self._last_log = monotonic()
        self._cost: dict[str, Decimal] = {}
        self._failed: dict[str, int] = {}
        self._bars: dict[str, tqdm[Any]] = {}
        if bars and not quiet:
            for i, tier in enumerate(tiers):
                self._bars[tier] = tqdm(
                    desc=f"{tier:>9}",
                    unit="rec",
                    position=i,
                    file=self._stream,
                    dynamic_ncols=True,
                    leave=True,
                )

    def log(self, line: str) -> None:
        """A plain line (suppressed by --quiet); written above the bars when they are on."""
        if self._quiet:
            return
        if self._bars:
            tqdm.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def record(self, tier: str, status: RecordStatus, cost: Decimal) -> None:
        self._cost[tier] = self._cost.get(tier, Decimal(0)) + cost
        if status is RecordStatus.FAILED:
            self._failed[tier] = self._failed.get(tier, 0) + 1
        bar = self._bars.get(tier)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(
                f"{usd(self._cost[tier])} failed={self._failed.get(tier, 0)}", refresh=False
            )

    def tick(self, counts: RunCounts) -> None:
        """Called now and then (the feeder, every 128 records); without bars, prints a line
        at most once a minute."""
        self.heartbeat(counts)

    def heartbeat(self, counts: RunCounts) -> bool:
        """Print a progress line if `LOG_EVERY_S` have passed since the last one (without bars,
        unless quiet); return whether it did. Safe to call as often as wanted: from a timer,
        it keeps cron's log alive while the feeder is blocked on a full queue, or every record
        waits (for the budget, a cooled-down model or a busy database file)."""
        if self._bars or self._quiet:
            return False
        now = self._monotonic()
        if now - self._last_log < LOG_EVERY_S:
            return False
        self._last_log = now
        self.log(
            f"progress: {counts.seen} read, {counts.done} done, {counts.failed} failed, "
            f"{counts.invalid} invalid, {counts.pending} pending, {counts.skipped} skipped, "
            f"{usd(counts.cost_usd)} spent"
        )
        return True

    def due_in(self) -> float:
        """Seconds until the next progress line is due (0 when it is due now)."""
        return max(0.0, self._last_log + LOG_EVERY_S - self._monotonic())

    async def keep_alive(
        self,
        counts: Callable[[], RunCounts],
        done: asyncio.Event,
        *,
        max_wait_s: float = KEEP_ALIVE_MAX_WAIT_S,
    ) -> None:
        """Run as a task beside the workers: a heartbeat when each line is due, until `done`.

        Wakes when the next line is due (re-reading the clock at least every `max_wait_s`,
        since `tick` may have printed meanwhile), so without a TTY there is a progress line at
        least once a minute whatever the input stage.
        """
        if self._bars or self._quiet:
            await done.wait()
            return
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), min(self.due_in(), max_wait_s))
            if not done.is_set():
                self.heartbeat(counts())

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
