"""Model and provider health: cooldowns, free daily caps, the outage breaker, and requests
that every model rejects the same way.

Pure bookkeeping over call outcomes (one event loop, no I/O); the dispatcher asks it which
models of a chain to try, and whether the run should stop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from batchroute.errors import (
    DailyCapReached,
    ProviderUnavailable,
    QualityFailed,
    RejectedError,
    RequestRejected,
    RetryableError,
    UpstreamError,
)
from batchroute.spec import LimitsSpec
from batchroute.types import RunStatus

SYSTEMATIC_CALLS = 20  # the same rejection this many times in a row, with no success between…
SYSTEMATIC_RECORDS = 10  # …for at least this many different records: the request is wrong
PER_RECORD_REJECTIONS = frozenset({"context_length_exceeded", "exceeds_daily_cap"})
"""Rejections that say something about one record (its size), not about the job."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the run should stop dispatching."""

    status: RunStatus
    error: UpstreamError


def is_availability(err: UpstreamError) -> bool:
    """Transport errors, timeouts, 408, 429 and 5xx: the provider, not the request."""
    return isinstance(err, RetryableError) and err.error_type != "malformed_response"


class Health:
    """What the run knows about each model and about the provider as a whole."""

    def __init__(
        self,
        limits: LimitsSpec,
        *,
        monotonic: Callable[[], float],
        wall: Callable[[], float],
        log: Callable[[str], None],
    ) -> None:
        """`monotonic` times cooldowns; `wall` (epoch seconds) reads a cap's reset time."""
        self.limits = limits
        self._now = monotonic
        self._wall = wall
        self._log = log
        self._cooled: dict[str, float] = {}  # model → monotonic time it may be used again
        self._capped: dict[str, float] = {}  # model → monotonic time its free daily cap resets
        self._streak: dict[str, int] = {}  # consecutive failures per model
        self._same_4xx: dict[str, tuple[str, int]] = {}  # model → (signature, count)
        self._recent: deque[bool] = deque(maxlen=limits.outage_window)  # True: unavailable
        self._rejected: tuple[str, int, set[str]] = ("", 0, set())

    # ---------------------------------------------------------------- models
    def usable(self, models: tuple[str, ...]) -> list[str]:
        """The chain without models at their free daily cap or cooling down."""
        if not self._capped and not self._cooled:  # the usual case: every model is open
            return list(models)
        now = self._now()
        # A model at its free daily cap is never retried before the cap resets (pitfall 7).
        open_ = [m for m in models if self._capped.get(m, 0) <= now]
        usable = [m for m in open_ if self._cooled.get(m, 0) <= now]
        return usable or open_  # all cooled down: try them anyway rather than fail blind

    def ok(self, model: str) -> None:
        self._streak.pop(model, None)  # cooldown counts *consecutive* failures
        self._same_4xx.pop(model, None)
        self._recent.append(False)
        if self._rejected[1]:
            self._rejected = ("", 0, set())

    def penalise(self, model: str, err: UpstreamError) -> None:
        """Cool a model down after repeated failures: availability failures, or the same 4xx
        again and again (a parameter it does not take), not one record's rejection."""
        now, lim = self._now(), self.limits
        if isinstance(err, DailyCapReached):
            wait = (err.reset_at - self._wall()) if err.reset_at else lim.cooldown_s
            self._capped[model] = now + max(wait, lim.cooldown_s)
            self._log(f"{model} reached its free daily cap; not used again before it resets")
            return
        if err.retry_after and err.retry_after > lim.backoff_max_s:
            self._cooled[model] = now + err.retry_after  # told to stay away longer than we wait
        if isinstance(err, QualityFailed) or err.error_type in PER_RECORD_REJECTIONS:
            return
        if isinstance(err, RejectedError):
            sig = _signature(err)
            prev, n = self._same_4xx.get(model, ("", 0))
            n = n + 1 if prev == sig else 1
            self._same_4xx[model] = (sig, n)
            if n < lim.cooldown_after:
                return
            self._same_4xx[model] = (sig, 0)
            self._cool(model, f"it answered {sig} {lim.cooldown_after} times in a row")
            return
        self._streak[model] = self._streak.get(model, 0) + 1
        if self._streak[model] >= lim.cooldown_after:
            self._streak[model] = 0
            self._cool(model, f"{lim.cooldown_after} failures in a row")

    def _cool(self, model: str, why: str) -> None:
        lim = self.limits
        self._cooled[model] = max(self._cooled.get(model, 0), self._now() + lim.cooldown_s)
        self._log(f"cooling down {model} for {lim.cooldown_s:g} s ({why})")

    # ------------------------------------------------------------- the run
    def failed(self, err: UpstreamError, record_key: str) -> Stop | None:
        """Count a failed call; a Stop when the provider is down or the request is wrong."""
        unavailable = is_availability(err)
        self._recent.append(unavailable)
        if unavailable:
            return self._outage(err)
        if isinstance(err, RejectedError) and not isinstance(err, QualityFailed | DailyCapReached):
            return self._systematic(err, record_key)
        return None

    def _outage(self, err: UpstreamError) -> Stop | None:
        window = self._recent
        if len(window) < (window.maxlen or 0):
            return None
        bad = sum(window)
        if bad < self.limits.outage_ratio * len(window):
            return None
        down = ProviderUnavailable(
            f"{bad} of the last {len(window)} calls failed for availability (last: {err}); "
            "the provider looks unreachable or down: records stay pending for the next run",
            model=err.model,
            status=err.status,
            error_type="provider_unavailable",
        )
        return Stop(RunStatus.UNAVAILABLE, down)

    def _systematic(self, err: UpstreamError, record_key: str) -> Stop | None:
        if err.error_type in PER_RECORD_REJECTIONS:
            return None
        sig = _signature(err)
        prev, n, keys = self._rejected
        if prev != sig:
            n, keys = 0, set()
        keys.add(record_key)
        self._rejected = (sig, n + 1, keys)
        if n + 1 < SYSTEMATIC_CALLS or len(keys) < SYSTEMATIC_RECORDS:
            return None
        fatal = RequestRejected(
            f"every call is rejected the same way ({n + 1} calls, {len(keys)} records, no "
            f"success between): {err}; fix the job file (request, provider options, models)",
            model=err.model,
            status=err.status,
            error_type=err.error_type,
        )
        return Stop(RunStatus.FAILED, fatal)


def _signature(err: UpstreamError) -> str:
    return f"HTTP {err.status} {err.error_type}: {str(err)[:80]}"
