"""Dispatch: one record through its tier's fallback chain, and up the tiers (design §6).

The loop only: `policy.decide` says what a failed attempt leads to, `Sender` makes each call
(budget, slot, pace, send, settle), `Health` says which models of a chain are worth trying
and when the run should stop, and `Book` records every attempt and the final row.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from batchroute.budget import Budget
from batchroute.client import OpenRouterClient
from batchroute.errors import RejectedError
from batchroute.plan import RunPlan
from batchroute.router import TierPlan
from batchroute.runner import policy
from batchroute.runner.book import Book
from batchroute.runner.cost import Pricer
from batchroute.runner.health import Health
from batchroute.runner.reconcile import Reconciler
from batchroute.runner.request import Requests
from batchroute.runner.send import NoFit, Sender
from batchroute.runner.work import Call, Control, RunOptions, Trail, WorkItem
from batchroute.spec import JobSpec
from batchroute.types import AttemptOutcome
from batchroute.usd import usd

TOO_BIG = "exceeds_daily_cap"  # a worst case above the whole cap: no run can send it
_EPOCH = datetime(1970, 1, 1)

__all__ = ["TOO_BIG", "Dispatcher", "NoFit"]


class Dispatcher:
    """Sends records; shared by all workers of a run (one event loop, no locks needed)."""

    def __init__(
        self,
        spec: JobSpec,
        opts: RunOptions,
        *,
        plan: RunPlan,
        client: OpenRouterClient,
        budget: Budget,
        control: Control,
        book: Book,
        log: Callable[[str], None],
    ) -> None:
        self.spec, self.plans, self.budget, self.control, self.book = (
            spec,
            dict(plan.tiers),
            budget,
            control,
            book,
        )
        self._sleep = opts.sleep
        self.policy = policy.Policy.of(spec)
        self._rng = random.Random(opts.jitter_seed)
        self.health = Health(
            spec.limits,
            monotonic=opts.monotonic,
            wall=lambda: (opts.now() - _EPOCH).total_seconds(),
            log=log,
        )
        self.sender = Sender(
            spec,
            opts,
            requests=Requests(plan),
            pricer=Pricer(plan),
            client=client,
            budget=budget,
            control=control,
            book=book,
            log=log,
        )
        self.budget_short = 0  # records left pending because their worst case did not fit
        self.deferred = 0  # records left pending because their chain was unavailable
        self._next_tier = {t: spec.next_tier(t) for t in spec.tiers}
        self._climbed, self._path = plan.resume.climbed, plan.escalation_path

    @property
    def reconciler(self) -> Reconciler | None:
        return self.sender.reconciler

    @reconciler.setter
    def reconciler(self, r: Reconciler | None) -> None:
        self.sender.reconciler = r
        if r is not None:  # its corrections teach reservations as answers do
            r.learn = self.sender.pricer.learn

    def wake(self) -> None:
        """Let calls waiting for budget look again (after a stop, or a settlement)."""
        self.sender.wake()

    async def process(self, item: WorkItem, trail: Trail) -> None:
        """Send one record until it is done, failed, or (on a stop) left pending."""
        tier, used = item.tier, 0
        if self._climbed and (up := self._climbed.get(item.record.key)):
            # An earlier run paid for, and rejected, its answer in the tiers below: go on.
            tier, used = policy.resume_tier(self._path(tier), up)
        while True:
            nxt = self._next_tier[tier]
            left = trail.escalations + used < self.spec.limits.max_escalations
            can_escalate = left and nxt is not None
            call = await self._try_chain(item, self.plans[tier], trail, can_escalate)
            if isinstance(call, NoFit):  # waits for tomorrow; records that fit go on
                self.budget_short += 1
                self.book.pending(item, trail, why=("awaiting_budget", self._no_fit(call)))
                return
            if call is not None and call.completion is not None:
                self.book.done(item, tier, trail, call)
                return
            if self.control.stopping:  # fatal error or interrupt: the next run retries
                self.book.pending(item, trail)
                return
            if trail.deferred:  # the chain was down: tomorrow's run tries again
                self.deferred += 1
                e = trail.last_error
                self.book.pending(item, trail, why=("unavailable", str(e)[:500] if e else ""))
                return
            if not trail.escalate or nxt is None:  # rejected, too big, or nowhere to climb
                self.book.failed(item, tier, trail)
                return
            trail.escalate = False
            tier = nxt
            trail.escalations += 1

    async def _try_chain(
        self, item: WorkItem, plan: TierPlan, trail: Trail, can_escalate: bool
    ) -> Call | NoFit | None:
        """Walk the tier's chain: a successful call, NoFit when the budget cannot take the
        call now, or None when the chain is done with (`trail.deferred`: it was down)."""
        chain = self.health.usable(plan.models)
        trail.unavailable = False
        for i, model in enumerate(chain):
            for attempt in range(1, self.policy.max_attempts + 1):
                if self.control.stopping:
                    return None
                call = await self.sender.call(item, plan, model, trail)
                if isinstance(call, NoFit):
                    if not call.never:
                        return call
                    trail.last_error = self._too_big(call, model)  # nothing sent: no attempt
                    break  # a cheaper model of the chain may fit
                if call.error is None:
                    self.health.ok(model)
                    return call
                last = i == len(chain) - 1
                outcome = self._failure(item, plan, call, trail, (attempt, last, can_escalate))
                if outcome is AttemptOutcome.RETRY:
                    wait = policy.backoff(
                        self.policy, attempt, call.error.retry_after, self._rng.random()
                    )
                    await self._sleep(wait)
                    continue
                trail.escalate = outcome is AttemptOutcome.ESCALATE
                trail.deferred = outcome is AttemptOutcome.DEFERRED
                if outcome in policy.CHAIN_ENDS:
                    return None
                break  # next model
        if trail.unavailable:  # the chain ran out on models that were down
            trail.escalate = self.policy.escalate_unavailable and can_escalate
            trail.deferred = not trail.escalate
        return None

    def _failure(
        self,
        item: WorkItem,
        plan: TierPlan,
        call: Call,
        trail: Trail,
        where: tuple[int, bool, bool],
    ) -> AttemptOutcome:
        """Book a failed call and decide what comes next; stop the run if health says so.
        `where`: (attempt, last model of the chain, a next tier may be tried)."""
        attempt, last, can_escalate = where
        err = trail.last_error = call.error
        assert err is not None
        stop = self.health.failed(err, item.record.key)
        if stop is not None:
            self.control.stop(stop.status, stop.error)
            self.wake()
        if policy.out_of_retries_unavailable(self.policy, err, attempt):
            trail.unavailable = True
        outcome = policy.decide(
            self.policy,
            err,
            attempt=attempt,
            last_model=last,
            can_escalate=can_escalate,
            unavailable=trail.unavailable,
        )
        if outcome is AttemptOutcome.FATAL:
            self.control.stop(policy.fatal_status(err), err)
            self.wake()
        self.book.attempt(item, plan.name, trail.attempts, call, outcome)
        if outcome not in (AttemptOutcome.RETRY, AttemptOutcome.FATAL):
            self.health.penalise(call.model, err)
        return outcome

    def _no_fit(self, nf: NoFit) -> str:
        b = self.budget
        return (
            f"worst case {usd(nf.worst)} does not fit in what today's limit leaves "
            f"({usd(b.spent)} spent of {usd(b.limit)}); the next run sends it"
        )

    def _too_big(self, nf: NoFit, model: str) -> RejectedError:
        return RejectedError(
            f"worst case {usd(nf.worst)} of this request exceeds the whole daily cap "
            f"{usd(self.budget.cap)}",
            model=model,
            error_type=TOO_BIG,
        )
