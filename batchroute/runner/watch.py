"""What the run watches beside its work: the API key's limit, and the signals that stop it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

from batchroute.budget import Budget
from batchroute.client import OpenRouterClient
from batchroute.usd import usd


async def watch_key(
    client: OpenRouterClient,
    budget: Budget,
    done: asyncio.Event,
    every_s: float,
    log: Callable[[str], None],
) -> None:
    """Read GET /key every `every_s` until `done`: other jobs or hosts may share the key."""
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every_s):  # not wait_for (runner/book.py, `writer`)
                await done.wait()
            return  # the workers are done: nothing more to guard
        remaining = await client.key_limit_remaining()
        if remaining is not None:
            before = budget.limit
            budget.lower_ceiling(remaining)
            if budget.limit < before:
                log(f"the API key has {usd(remaining)} left: the limit is now {usd(budget.limit)}")


@contextlib.contextmanager
def signals_handled(enabled: bool, on_signal: Callable[[], None]) -> Iterator[None]:
    """SIGINT/SIGTERM call `on_signal` while inside (when `enabled`), from the run's very start
    (store opening and catalogue fetch included), not only once records flow."""
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM) if enabled else ()
    for sig in sigs:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
