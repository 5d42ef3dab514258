"""Limiter: the pacer never lets more than rpm calls into any 60-second window."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable

from batchroute.limiter import Limiter, pacer


def _calls_in_first_minute(burst: float, rate: float) -> int:
    """aiolimiter lets `burst` through at t=0, then one every 1/rate s."""
    times = [0.0] * int(burst)
    k = 1
    while k / rate < 60:
        times.append(k / rate)
        k += 1
    return sum(1 for t in times if t < 60)


def test_pacer_parameters_bound_every_window() -> None:
    for rpm in (1, 59, 60, 600, 6_000, 60_000):
        lim = pacer(rpm)
        rate = lim.max_rate / lim.time_period
        n = _calls_in_first_minute(lim.max_rate, rate)
        assert n <= rpm, rpm
        assert n >= 0.97 * rpm, rpm


class _SkippingSelector(selectors.DefaultSelector):
    """Instead of blocking until the next timer, move the loop's clock to it. Every loop step
    also takes a nanosecond, as a real one takes some time: aiolimiter re-arms its timer for a
    float-rounding remainder, which would otherwise never come due."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        super().__init__()
        self._advance = advance

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer: only I/O can wake the loop
            return super().select(None)
        self._advance(max(timeout, 1e-9))
        return super().select(0)


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock (aiolimiter paces by `loop.time()` and loop timers):
    pacing is measured exactly, without waiting for it and whatever the machine's load."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_SkippingSelector(self._skip))

    def _skip(self, seconds: float) -> None:
        self._now += seconds

    def time(self) -> float:
        return self._now


def test_acquire_paces_real_calls() -> None:
    # 6,000 rpm: a burst of 10, then about 100 calls/s.
    loop = _VirtualTimeLoop()

    async def forty() -> float:
        lim = Limiter(6_000, {"m": 60_000})
        t0 = loop.time()
        for _ in range(40):
            await lim.acquire("m")
        return loop.time() - t0

    try:
        elapsed = loop.run_until_complete(forty())
    finally:
        loop.close()
    assert elapsed >= 0.95 * (40 - 10) / 100
