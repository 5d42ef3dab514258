"""When the run's books hand the journal over to the writer process (`runner.book.Book`): every
5 s while records are read, early when rows pile up, every 0.25 s once the input is read (issue
11); and the writer loop's tick. `Book` reads the intervals as its own names (tests and
benches set them on `runner.book`).
"""

from __future__ import annotations

import asyncio
import contextlib

# Commit every 5 s, not every second (design §7; docs/design-notes.md, "Commit interval"): the
# journal, not the commit, is what a kill -9 keeps, and each commit costs the writer process a
# fixed ~25 ms of CPU (attach, checkpoint, detach) whatever it holds: the same rows cost it
# 79-90 µs each in 1 s segments, 37-39 in 5 s ones (tests/bench/bench_writer.py).
FLUSH_EVERY_S = 5.0
FLUSH_ROWS = 20_000  # hand over early when this many result rows wait (~5 s at 4,000 rec/s)
# Workers and feeder wait while more rows are not committed yet (the writer is behind: a reader
# holds the file); 2x, not 4x, now that a segment may hold 20,000 rows: the writer commits the
# segments that wait together in one transaction, which this bounds to ~40,000 rows.
MAX_BUFFERED = 2 * FLUSH_ROWS
TAIL_FLUSH_S = 0.25  # once the input is read: smaller segments, so the run's last one is small


async def tick(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass (the writer loop's tick).

    Not `asyncio.wait_for`: on Python 3.11 it returns normally when the task is cancelled in
    the loop pass that set the event (the inner wait is done: its result wins), and the writer
    loop then went on ticking every `TAIL_FLUSH_S` while `_pump`'s task group waited for it
    forever: a cancelled run hung (flake7). `asyncio.timeout` never drops a cancel."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
