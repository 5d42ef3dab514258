"""Limiter stage: request pacing per model and overall (aiolimiter). Nothing else.

aiolimiter's bucket lets `max_rate` calls through at once and refills at max_rate per period,
so `AsyncLimiter(600, 60)` sends 1,200 calls in the first minute. We use a small burst and a
refill rate lowered by that burst, so that no 60-second window ever holds more than the
configured requests per minute: adherence stays in 97-100 % and the server never sees a
self-inflicted 429. (aiolimiter lets a call through while level + 1 ≤ max_rate; the level
drains at max_rate / time_period per second.)
"""

from __future__ import annotations

from collections.abc import Mapping

from aiolimiter import AsyncLimiter


def pacer(rpm: int) -> AsyncLimiter:
    """A limiter that keeps every sliding 60 s window at or below `rpm` calls."""
    # About 0.1 s worth of calls; at least 2 from 100 rpm on: with a bucket of 1, every late
    # wake-up of the event loop is capacity lost for good (600 rpm measured 93-96 %).
    burst = max(2 if rpm >= 100 else 1, rpm // 600)
    # `burst` calls at t=0, then one every 1/rate s: a half-open 60 s window holds
    # burst + 60·rate - 1 calls, which must not pass rpm.
    per_second = (rpm - burst + 0.5) / 60  # +0.5, not +1: float timing never tips it over
    return AsyncLimiter(burst, burst / per_second)


class Limiter:
    """One global pacer plus one per model that has its own rpm."""

    def __init__(self, rpm: int | None, per_model_rpm: Mapping[str, int]) -> None:
        self._global = pacer(rpm) if rpm else None
        self._per_model = {m: pacer(r) for m, r in per_model_rpm.items()}
        self.active = self._global is not None or bool(self._per_model)  # else acquire is a no-op

    async def acquire(self, model: str) -> None:
        """Wait until a call to `model` may go out (its own pace, then the global one)."""
        await self.acquire_model(model)
        await self.acquire_global()

    async def acquire_model(self, model: str) -> None:
        """Wait for `model`'s own pace (a no-op for a model without its own rpm)."""
        per_model = self._per_model.get(model)
        if per_model is not None:
            await per_model.acquire()

    async def acquire_global(self) -> None:
        """Wait for the job's overall pace (a no-op without `requests_per_minute`)."""
        if self._global is not None:
            await self._global.acquire()
