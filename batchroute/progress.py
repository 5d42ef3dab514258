"""Progress display: on a terminal, a block of bars redrawn in place (the run's total, then one
row per tier that has work); without one (cron), or on a terminal narrower than `MIN_WIDTH`
columns, a progress line at most once a minute, from `tick` while records flow and from
`keep_alive` (a timer) when they do not.

What the figures mean (nothing here is estimated):
- the run's total is the records this run has to settle: the input's records less those already
  final and the repeated ids, capped by --limit. The runner knows it before the first call (its
  one pass over the input's keys at start, whatever the file's size). With --limit (invalid
  lines do not count against it) or --rerun-changed (stale records add to it) that figure is a
  lower bound, marked `+`, until the whole input has been read; then it is exact.
- a record is *settled* when it is done, failed or invalid. A record left pending (budget spent,
  interrupted, provider down) is shown as pending and never as settled: the bar does not move.
- a tier's total is the records routed to it so far; the tier is decided record by record, so it
  is marked `+` (more may come) until the whole input has been read. A tier's % and ETA appear
  only then. Records count in the tier they were routed to, escalated ones included.
- records already final (skipped on resume) are said once, in the start line, never as work.

Owns nothing but the display; the runner tells it what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TextIO

from batchroute.types import RecordStatus, RunCounts
from batchroute.usd import usd

LOG_EVERY_S = 60.0
KEEP_ALIVE_MAX_WAIT_S = 5.0  # keep_alive re-reads the clock at least this often
DRAW_EVERY_S = 0.2  # redraw the bars at most this often (a record settling asks for it)
IDLE_DRAW_S = 1.0  # and at least this often, so rate and ETA move while nothing settles
MIN_WIDTH = 40  # narrower terminals (or one that says 0 columns) get the cron lines instead
RATE_WINDOW_S = 30.0  # the rate is measured over about this long
BAR_MAX = 30  # columns of the bar itself, at most
BAR_MIN = 8  # no bar narrower than this: the figures matter more
# Looked up once: through the enum class each costs ~0.24 µs (Python 3.11), per record.
_DONE, _FAILED, _PENDING = RecordStatus.DONE, RecordStatus.FAILED, RecordStatus.PENDING


def duration(seconds: float) -> str:
    """4s, 2m05s, 1h02m: short enough for a narrow terminal."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 100 * 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return ">99h"


def terminal_size(stream: TextIO) -> tuple[int, int]:
    """(columns, lines) of the terminal `stream` writes to; 0 where it is none or does not say."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 0, 0
    return size.columns, size.lines


def eta(
    total: int | None, settled: int, rate: float | None, *, final: bool, pending: int
) -> str | None:
    """Time left at the current rate; None when it cannot be said honestly: the total may
    still grow, nothing is left, no rate yet, or records are being left pending (a stop)."""
    if total is None or not final or pending or not rate or total <= settled:
        return None
    return duration((total - settled) / rate)


def rate_text(rate: float | None) -> str:
    """Records per second: "?" until it is measured."""
    if rate is None:
        return "?"
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


class Rate:
    """Records per second over the last `RATE_WINDOW_S` (None until a second has passed)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, n: int) -> float | None:
        s = self._samples
        s.append((now, n))
        while len(s) > 2 and now - s[1][0] >= RATE_WINDOW_S:
            s.popleft()
        t0, n0 = s[0]
        return (n - n0) / (now - t0) if now - t0 >= 1.0 else None


@dataclass
class _Tier:
    routed: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    cost: Decimal = Decimal(0)
    rate: Rate = field(default_factory=Rate)

    @property
    def settled(self) -> int:
        return self.done + self.failed


@dataclass(frozen=True)
class Row:
    """One line of the block: what it shows, before it is fitted to a width."""

    label: str
    settled: int
    total: int | None  # None: not known
    final: bool  # the total can no longer grow
    rate: float | None
    cost: Decimal
    failed: int
    pending: int

    def text(self, width: int, label_width: int) -> str:
        """The row in at most `width` - 1 columns (the last column would wrap on some
        terminals): the most useful fields first, a bar only where there is room left."""
        head = f"{self.label:>{label_width}} "
        if self.total is None:
            fields = [f"{self.settled} settled"]
        elif self.final:
            pct = self.settled * 100 // self.total if self.total else 100
            fields = [f"{self.settled}/{self.total}", f"{pct:>3}%"]
        else:
            fields = [f"{self.settled}/{self.total}+"]
        left = eta(self.total, self.settled, self.rate, final=self.final, pending=self.pending)
        if left:
            fields.append(f"ETA {left}")
        fields.append(usd(self.cost))
        if self.pending:
            fields.append(f"{self.pending} pending")
        if self.failed:
            fields.append(f"{self.failed} failed")
        fields.append(f"{rate_text(self.rate)} rec/s")
        room = width - 1 - len(head)
        shown: list[str] = []
        for f in fields:
            if len(" ".join([*shown, f])) <= room:
                shown.append(f)
        body = " ".join(shown)
        spare = room - len(body) - 1
        if self.total is not None and self.final and spare >= BAR_MIN:
            n = min(BAR_MAX, spare)
            filled = n * self.settled // self.total if self.total else n
            body = "█" * filled + "░" * (n - filled) + " " + body
        return (head + body)[: max(width - 1, 0)]


class Progress:
    """The bars on a terminal, or periodic plain lines for cron (see the module doc)."""

    def __init__(
        self,
        tiers: Iterable[str],
        *,
        bars: bool,
        quiet: bool,
        stream: TextIO | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        total: int | None = None,
        total_grows: bool = False,
        counts: Callable[[], RunCounts] | None = None,
        width: Callable[[], int] | None = None,
        height: Callable[[], int] | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._monotonic = monotonic
        self._last_log = monotonic()
        self._bars = bars and not quiet
        self._tiers = {t: _Tier() for t in tiers}
        self._total = total
        self._total_grows = total_grows  # --rerun-changed: stale records add to it as read
        self._all_read = False
        self._counts = counts or RunCounts
        self._width = width or (lambda: terminal_size(self._stream)[0])
        self._height = height or (lambda: terminal_size(self._stream)[1])  # 0: not known
        self._rate = Rate()
        self._drawn = 0  # lines of the block on screen (the cursor is on the line below)
        self._last_draw = -1e18
        self.intro = ""  # what the run's start line says of this input (set by the runner)

    # ------------------------------------------------------------- the runner's calls
    def set_total(self, total: int) -> None:
        """The run's total, once the input's pass has counted it (a fresh run's first calls
        go out before: issue 11)."""
        self._total = total

    def routed(self, tier: str) -> None:
        """A record was routed to `tier` (sent, or left pending at once)."""
        t = self._tiers.get(tier)
        if t is None:  # (not `setdefault(tier, _Tier())`: a _Tier built for every record)
            t = self._tiers[tier] = _Tier()
        t.routed += 1

    def all_read(self) -> None:
        """The whole input has been read: every total is now known."""
        self._all_read = True
        self._draw(force=True)

    def record(self, tier: str, status: RecordStatus, cost: Decimal) -> None:
        """A record's row was booked in the tier it was routed to ("-" for an invalid line)."""
        t = self._tiers.get(tier)
        if t is not None:
            t.cost += cost
            if status is _DONE:
                t.done += 1
            elif status is _FAILED:
                t.failed += 1
            elif status is _PENDING:
                t.pending += 1
        if self._bars:  # (no call at all without bars: once a record, issue 11)
            self._draw()

    def fixed(self, tier: str, delta: Decimal) -> None:
        """A record already booked in `tier` had a reserved call's real cost learnt later."""
        t = self._tiers.get(tier)
        if t is not None:
            t.cost += delta
            self._draw()

    def log(self, line: str) -> None:
        """A plain line (suppressed by --quiet); written above the bars when they are on."""
        if self._quiet:
            return
        drawn = self._drawn
        self._erase()
        print(line, file=self._stream, flush=True)
        if drawn:
            self._draw(force=True)

    def tick(self, counts: RunCounts) -> None:
        """Called now and then (the feeder, every 128 records); without bars, prints a line
        at most once a minute."""
        self.heartbeat(counts)

    def heartbeat(self, counts: RunCounts) -> bool:
        """Print a progress line if `LOG_EVERY_S` have passed since the last one (without bars,
        unless quiet); return whether it did. Safe to call as often as wanted: from a timer,
        it keeps cron's log alive while the feeder is blocked on a full queue, or every record
        waits (for the budget, a cooled-down model or a busy database file)."""
        if self._quiet or self._drawing():
            return False
        now = self._monotonic()
        if now - self._last_log < LOG_EVERY_S:
            return False
        self._last_log = now
        self.log(self.line(counts))
        return True

    def line(self, counts: RunCounts) -> str:
        """The cron line: the same figures as the bars, in words."""
        settled = counts.done + counts.failed + counts.invalid
        total = self.total(counts)
        rate = self._rate.update(self._monotonic(), settled)
        head = f"progress: {settled} settled"
        if total is not None:
            pct = settled * 100 // total if total else 100
            head += f" of {total}{'' if self._total_final() else '+'} ({pct}%)"
        tail = f"{rate_text(rate)} rec/s" if rate is not None else ""
        left = eta(total, settled, rate, final=self._total_final(), pending=counts.pending)
        tail += f", ETA {left}" if left else ""
        return (
            f"{head}: {counts.done} done, {counts.failed} failed, {counts.invalid} invalid, "
            f"{counts.pending} pending; {counts.seen} read, {counts.skipped} skipped "
            f"(already final); {usd(counts.cost_usd)} spent" + (f"; {tail}" if tail else "")
        )

    def total(self, counts: RunCounts) -> int | None:
        """Records this run has to settle: the up-front figure, or, once the whole input has
        been read, exactly what was routed and found invalid."""
        if self._all_read:
            return sum(t.routed for t in self._tiers.values()) + counts.invalid
        return self._total

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
        """Run as a task beside the workers until `done`: redraw the bars every `IDLE_DRAW_S`
        (rate and ETA move while nothing settles), or without them a heartbeat when each line
        is due (re-reading the clock at least every `max_wait_s`, since `tick` may have printed
        meanwhile), so without a TTY there is a progress line at least once a minute."""
        self._counts = counts
        if self._quiet:
            await done.wait()
            return
        while not done.is_set():
            wait = IDLE_DRAW_S if self._drawing() else min(self.due_in(), max_wait_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for (runner/book.py, `writer`)
                    await done.wait()
            if not done.is_set():
                if self._drawing():
                    self._draw(force=True)
                else:
                    self.heartbeat(counts())

    def close(self) -> None:
        """Draw the final state and leave it on screen; later lines go below it."""
        if self._drawing():
            self._draw(force=True)
        self._drawn = 0
        self._bars = False

    # ---------------------------------------------------------------------- the block
    def _total_final(self) -> bool:
        return self._all_read or (self._total is not None and not self._total_grows)

    def _drawing(self) -> bool:
        return self._bars and self._fits()

    def _fits(self) -> bool:
        """Room for the block: `MIN_WIDTH` columns, and a line more than its rows (a block
        taller than the terminal cannot be redrawn in place)."""
        if self._width() < MIN_WIDTH:
            return False
        height = self._height()
        active = sum(1 for t in self._tiers.values() if t.routed or t.settled or t.pending)
        return height == 0 or 1 + active < height

    def rows(self) -> list[Row]:
        """The block: the run's row, then one per tier with work (idle tiers are left out)."""
        now, c = self._monotonic(), self._counts()
        settled = c.done + c.failed + c.invalid
        rows = [
            Row(
                "total", settled, self.total(c), self._total_final(),
                self._rate.update(now, settled), c.cost_usd, c.failed, c.pending,
            )
        ]  # fmt: skip
        for name, t in self._tiers.items():
            if t.routed or t.settled or t.pending:
                rows.append(
                    Row(
                        name, t.settled, t.routed, self._all_read, t.rate.update(now, t.settled),
                        t.cost, t.failed, t.pending,
                    )
                )  # fmt: skip
        return rows

    def _draw(self, *, force: bool = False) -> None:
        if not self._bars:
            return
        now = self._monotonic()
        if not force and now - self._last_draw < DRAW_EVERY_S:
            return
        self._last_draw = now  # also when too small: the size is asked at most this often
        if not self._fits():  # too narrow or too short for a block: the cron lines take over
            self._erase()
            return
        width = self._width()
        rows = self.rows()
        label_width = max(len(r.label) for r in rows)
        up = f"\x1b[{self._drawn}A\r" if self._drawn else "\r"
        body = "".join(r.text(width, label_width) + "\x1b[K\n" for r in rows)
        self._stream.write(up + body + "\x1b[J")
        self._stream.flush()
        self._drawn = len(rows)

    def _erase(self) -> None:
        if self._drawn:
            self._stream.write(f"\x1b[{self._drawn}A\r\x1b[J")
            self._stream.flush()
            self._drawn = 0
