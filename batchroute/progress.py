"""Progress display: one tqdm bar per tier on a TTY, a log line at most once a minute without.

Owns nothing but the display; the runner tells it what happened.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, TextIO

from tqdm import tqdm

from batchroute.types import RecordStatus, RunCounts

LOG_EVERY_S = 60.0


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
                f"${self._cost[tier]:.4f} failed={self._failed.get(tier, 0)}", refresh=False
            )

    def tick(self, counts: RunCounts) -> None:
        """Called now and then; without bars, prints a line at most once a minute."""
        if self._bars or self._quiet:
            return
        now = self._monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            self.log(
                f"progress: {counts.done} done, {counts.failed} failed, {counts.invalid} invalid,"
                f" {counts.skipped} skipped, ${counts.cost_usd:.6f} spent"
            )

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
