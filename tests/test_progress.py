"""Issue 13: the progress block says what is true. Driven by hand (an injected clock and width,
a StringIO for the terminal); `test_progress_tty.py` runs the real CLI in a pseudo-terminal.
"""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pyte
import pytest

from batchroute.progress import LOG_EVERY_S, MIN_WIDTH, Progress, duration
from batchroute.types import RecordStatus, RunCounts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _screen(out: io.StringIO, width: int = 200) -> list[str]:
    """What a terminal shows after this output (a pty turns "\\n" into "\\r\\n")."""
    screen = pyte.Screen(width, 30)
    pyte.Stream(screen).feed(out.getvalue().replace("\n", "\r\n"))
    return [line.rstrip() for line in screen.display if line.strip()]


def _progress(
    counts: RunCounts, *, total: int | None, width: int = 120, grows: bool = False
) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    p = Progress(
        ["budget", "mid", "premium"],
        bars=True,
        quiet=False,
        stream=out,
        monotonic=clock,
        total=total,
        total_grows=grows,
        counts=lambda: counts,
        width=lambda: width,
    )
    return p, out, clock


def _settle(p: Progress, counts: RunCounts, tier: str, status: RecordStatus) -> None:
    if status is RecordStatus.DONE:
        counts.done += 1
    elif status is RecordStatus.FAILED:
        counts.failed += 1
    else:
        counts.pending += 1
    p.record(tier, status, Decimal("0.001"))


def test_pending_records_are_never_counted_as_settled() -> None:
    """The old bars counted every booked row: after a budget stop or Ctrl-C, the rows left
    pending made the bar jump to the input size."""
    counts = RunCounts()
    p, out, clock = _progress(counts, total=10)
    for _ in range(10):
        p.routed("mid")
    p.all_read()
    for _ in range(3):
        _settle(p, counts, "mid", RecordStatus.DONE)
    for _ in range(7):
        _settle(p, counts, "mid", RecordStatus.PENDING)
    clock.now += 5
    p.close()
    total, mid = _screen(out)
    assert re.search(r"\b3/10\s+30%", total), total
    assert "7 pending" in total
    assert re.search(r"\b3/10\s+30%", mid), mid
    assert "ETA" not in total  # what is left will not be done by this run


def test_idle_tiers_are_hidden_and_a_tier_total_is_marked_until_the_input_is_read() -> None:
    counts = RunCounts()
    p, out, clock = _progress(counts, total=6)
    for tier in ("mid", "mid", "budget"):
        p.routed(tier)
    _settle(p, counts, "mid", RecordStatus.DONE)
    clock.now += 1
    p.log("a note")  # redraws the block below the note
    note, *rows = _screen(out)
    assert note == "a note"
    assert [r.split()[0] for r in rows] == ["total", "budget", "mid"], rows  # no premium
    assert "1/6 " in rows[0]
    assert "16%" in rows[0]
    assert "1/2+" in rows[2]
    assert "%" not in rows[2]
    for tier in ("mid", "mid", "budget"):
        p.routed(tier)
    p.all_read()
    _, *rows = _screen(out)
    assert re.search(r"\b1/4\s+25%", rows[2]), rows


def test_eta_and_rate_come_from_what_settled() -> None:
    counts = RunCounts()
    p, out, clock = _progress(counts, total=100)
    for _ in range(100):
        p.routed("mid")
    p.all_read()
    for _ in range(10):  # 10 records in 5 s: 2/s, 90 left: 45 s
        clock.now += 0.5
        _settle(p, counts, "mid", RecordStatus.DONE)
    p.close()
    total = _screen(out)[0]
    assert re.search(r"\b10/100\s+10%", total), total
    assert "ETA 45s" in total, total
    assert "2.0 rec/s" in total, total


def test_with_a_growing_total_there_is_no_percentage_until_all_is_read() -> None:
    """--limit or --rerun-changed: the up-front total is a lower bound."""
    counts = RunCounts()
    p, out, _ = _progress(counts, total=5, grows=True)
    p.routed("mid")
    _settle(p, counts, "mid", RecordStatus.DONE)
    p.close()
    total = _screen(out)[0]
    assert "1/5+" in total, total
    assert "%" not in total, total


@pytest.mark.parametrize("width", [MIN_WIDTH, 41, 50, 60, 80, 100, 120, 200])
def test_every_row_fits_the_terminal(width: int) -> None:
    counts = RunCounts()
    p, out, clock = _progress(counts, total=123_456, width=width)
    for tier in ("budget", "mid", "premium"):
        for _ in range(1000):
            p.routed(tier)
    for i in range(900):
        clock.now += 0.01
        _settle(p, counts, ("budget", "mid", "premium")[i % 3], RecordStatus.FAILED)
    counts.cost_usd = Decimal("1234.5678")
    p.close()
    rows = _screen(out, width)
    assert len(rows) == 4
    assert all(len(r) < width for r in rows), rows
    assert all("/" in r for r in rows), rows


def test_a_terminal_too_short_for_the_block_gets_the_cron_lines() -> None:
    """Three active tiers and a total need four lines and one more below: a terminal of four
    lines cannot redraw them in place."""
    out, clock, counts = io.StringIO(), Clock(), RunCounts()
    p = Progress(
        ["budget", "mid", "premium"], bars=True, quiet=False, stream=out, monotonic=clock,
        total=3, counts=lambda: counts, width=lambda: 120, height=lambda: 4,
    )  # fmt: skip
    for tier in ("budget", "mid", "premium"):
        p.routed(tier)
        _settle(p, counts, tier, RecordStatus.DONE)
    clock.now += LOG_EVERY_S
    assert p.heartbeat(counts)
    p.close()
    # The block drawn while it fitted (one tier) was erased when it stopped fitting.
    (line,) = _screen(out)
    assert line.startswith("progress: 3 settled of 3 (100%): 3 done"), line
    assert "ETA" not in line  # nothing left


def test_durations_are_short() -> None:
    assert [duration(s) for s in (4.2, 125, 3720, 10**7)] == ["4s", "2m05s", "1h02m", ">99h"]
