"""The retry policy of design §6 as pure functions: what a failed attempt leads to, and how
long to wait before the next one. No event loop, no clock, no I/O: testable on their own.

retry the same model with backoff (RetryableError with attempts left), move to the next model
(RejectedError, retries used up), escalate to the next tier (an answer that failed a quality
check), leave the record for the next run (its chain was down), stop the run
(FatalUpstreamError).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from batchroute.errors import (
    CreditsExhausted,
    FatalUpstreamError,
    QualityFailed,
    RetryableError,
    UpstreamError,
)
from batchroute.runner.health import is_availability
from batchroute.spec import JobSpec
from batchroute.types import AttemptOutcome, RunStatus

CHAIN_ENDS = frozenset({AttemptOutcome.ESCALATE, AttemptOutcome.FATAL, AttemptOutcome.DEFERRED})
"""Outcomes after which no other model of the chain is tried."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The job's retry settings, read once."""

    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    escalate_unavailable: bool  # `escalate_on: [unavailable]`: an outage climbs a tier
    escalate_quality: bool = True  # `escalate_on: [quality]` (the default): a weak answer does

    @classmethod
    def of(cls, spec: JobSpec) -> Policy:
        lim = spec.limits
        return cls(
            lim.max_attempts,
            lim.backoff_base_s,
            lim.backoff_max_s,
            "unavailable" in spec.escalate_on,
            "quality" in spec.escalate_on,
        )


def out_of_retries_unavailable(policy: Policy, err: UpstreamError, attempt: int) -> bool:
    """This model is done with because it was down (not because it refused the request)."""
    return (
        isinstance(err, RetryableError) and attempt >= policy.max_attempts and is_availability(err)
    )


def decide(
    policy: Policy,
    err: UpstreamError,
    *,
    attempt: int,
    last_model: bool,
    can_escalate: bool,
    unavailable: bool,
) -> AttemptOutcome:
    """What follows the failed `attempt` (1-based) of one model.

    `last_model`: no model of the chain is left after this one; `can_escalate`: a next tier
    exists and the record has escalations left; `unavailable`: some model of this chain
    failed for availability (this one included, once out of retries).
    """
    if isinstance(err, FatalUpstreamError):
        return AttemptOutcome.FATAL
    retry = isinstance(err, RetryableError) and attempt < policy.max_attempts
    if retry and (err.retry_after or 0) <= policy.backoff_max_s:
        return AttemptOutcome.RETRY
    if isinstance(err, QualityFailed) and can_escalate and policy.escalate_quality:
        return AttemptOutcome.ESCALATE  # design §6: a weak answer goes to a stronger tier
    if not last_model:
        return AttemptOutcome.FALLBACK
    if unavailable:  # some model of the chain was down: it may be back tomorrow
        if policy.escalate_unavailable and can_escalate:
            return AttemptOutcome.ESCALATE  # the job opted in to pay more for it
        return AttemptOutcome.DEFERRED
    return AttemptOutcome.FAILED  # rejected by every model: a dearer tier is no cure


def resume_tier(path: tuple[str, ...], climbed: Collection[str]) -> tuple[str, int]:
    """Where a record starts that an earlier run sent up from the tiers `climbed` after a paid
    answer failed a quality check, and was ended or killed before the next tier answered
    (`store.runs.climbed`): the tier past the furthest of them on its escalation `path` (its
    routed tier first), with the escalations that used. Its routed tier (`path[0]`, 0) when
    none is on the path (the job's tiers changed since) or it is at the path's end."""
    reached = max((path.index(t) for t in climbed if t in path[:-1]), default=-1)
    return path[reached + 1], reached + 1


def fatal_status(err: UpstreamError) -> RunStatus:
    """The run status a FATAL outcome stops the run with."""
    return RunStatus.BUDGET_EXHAUSTED if isinstance(err, CreditsExhausted) else RunStatus.FAILED


def backoff(policy: Policy, attempt: int, retry_after: float | None, jitter: float) -> float:
    """Seconds before retry `attempt + 1`: exponential with "equal jitter" (`jitter` in
    [0, 1) from the run's seeded generator), never less than the server's Retry-After."""
    delay = min(policy.backoff_max_s, policy.backoff_base_s * 2.0 ** (attempt - 1))
    delay = delay / 2 + jitter * delay / 2
    return max(delay, retry_after or 0.0)
