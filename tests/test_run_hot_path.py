"""The run's per-call shortcuts (issue 11, cpu6a): each must do what the slower form did.

`Slots.take` is `asyncio.Semaphore.acquire` without a coroutine when a slot is free and nobody
waits; `utcnow` is the store's naive-UTC clock (`datetime.utcnow` before Python 3.12)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from batchroute.runner.send import Slots
from batchroute.runner.work import utcnow


def test_take_takes_a_free_slot_and_never_below_zero() -> None:
    async def go() -> None:
        s = Slots(2)
        assert s.take()
        assert s.take()
        assert not s.take()  # none left: the caller must wait with `acquire`
        assert s.locked()
        s.release()
        assert s.take()

    asyncio.run(go())


def test_take_does_not_jump_a_queued_waiter() -> None:
    """A slot released while a call waits for one goes to that call, not to a later `take`."""

    async def go() -> None:
        s = Slots(1)
        assert s.take()
        waiter = asyncio.ensure_future(s.acquire())
        await asyncio.sleep(0)  # the waiter is queued
        s.release()  # handed to the waiter (the count stays 0)
        assert not s.take()
        assert await asyncio.wait_for(waiter, 5) is True
        s.release()
        assert s.take()

    asyncio.run(go())


def test_take_does_not_take_while_a_woken_waiter_has_not_run() -> None:
    """A slot free while a waiter handed one has not run yet: `acquire` would queue (`locked()`
    counts that waiter), so `take` does not take either (the review: without its `_waiters`
    clause the other tests passed)."""

    async def go() -> None:
        s = Slots(2)
        assert s.take()
        assert s.take()
        waiter = asyncio.ensure_future(s.acquire())
        await asyncio.sleep(0)  # queued
        s.release()  # handed to the waiter, which has not run yet
        s.release()  # a second slot free, the woken waiter still in the queue
        assert s.locked()  # what `acquire` goes by
        assert not s.take()
        assert await asyncio.wait_for(waiter, 5) is True
        assert s.take()  # the waiter ran and left the queue: the free slot is taken

    asyncio.run(go())


def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    """Cancelled after it was handed a slot: the slot goes to the next (as `acquire` does)."""

    async def go() -> None:
        s = Slots(1)
        assert s.take()
        first = asyncio.ensure_future(s.acquire())
        second = asyncio.ensure_future(s.acquire())
        await asyncio.sleep(0)
        s.release()  # handed to `first`…
        first.cancel()  # …which is cancelled before it runs
        assert await asyncio.wait_for(second, 5) is True
        assert first.cancelled()
        assert not s.take()  # `second` holds the only slot
        s.release()
        assert s.take()

    asyncio.run(go())


def test_utcnow_is_naive_utc_to_the_microsecond() -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    now = utcnow()
    after = datetime.now(UTC).replace(tzinfo=None)
    assert now.tzinfo is None
    assert before <= now <= after
    # the same instant as time.time() within a second (not local time)
    assert abs(now - datetime(1970, 1, 1) - timedelta(seconds=time.time())) < timedelta(seconds=1)


@pytest.mark.filterwarnings("error")
def test_utcnow_warns_on_no_python() -> None:
    """From 3.12 `datetime.utcnow` is deprecated: the clock must not warn there."""
    utcnow()
