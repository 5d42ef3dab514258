"""Limiter: the pacer never lets more than rpm calls into any 60-second window."""

from __future__ import annotations

import asyncio

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


async def test_acquire_paces_real_calls() -> None:
    # 6,000 rpm: a burst of 10, then about 100 calls/s.
    lim = Limiter(6_000, {"m": 60_000})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(40):
        await lim.acquire("m")
    elapsed = loop.time() - t0
    assert elapsed >= 0.95 * (40 - 10) / 100
