"""Dispatch: one record through its tier's fallback chain, under the budget and the limiter.

The policy of design §6 lives here: retry the same model with backoff (RetryableError), move
to the next model (RejectedError, retries used up), escalate to the next tier (chain
exhausted, or an answer that failed a quality check), stop the run (FatalUpstreamError).
Decisions come from exception types; money goes through `Budget` before and after each call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from batchroute.budget import (
    Budget,
    Reservation,
    ceil_usd,
    plausible_cost,
    quantize_usd,
    worst_case_cost,
)
from batchroute.catalog import Catalog, ModelInfo
from batchroute.client import OpenRouterClient
from batchroute.errors import (
    CreditsExhausted,
    FatalUpstreamError,
    QualityFailed,
    RejectedError,
    RetryableError,
    UpstreamError,
)
from batchroute.limiter import Limiter
from batchroute.router import TierPlan
from batchroute.runner.book import Book
from batchroute.runner.health import Health, is_availability
from batchroute.runner.reconcile import Reconciler, Unsettled
from batchroute.runner.work import Call, Control, RunOptions, Trail, WorkItem
from batchroute.spec import JobSpec
from batchroute.types import AttemptOutcome, Completion, CostSource, RunStatus

# Failures after which the provider may still bill a generation: booked at the reservation
# until GET /generation tells the real cost (design §5, cost_source 'reserved').
UNKNOWN_OUTCOME = frozenset({"malformed_response", "connection", "timeout", "no_choices"})


_CHAIN_ENDS = frozenset({AttemptOutcome.ESCALATE, AttemptOutcome.FATAL, AttemptOutcome.DEFERRED})
TOO_BIG = "exceeds_daily_cap"  # a worst case above the whole cap: no run can send it


@dataclass(frozen=True, slots=True)
class NoFit:
    """The budget could not take a call of `worst` (nothing was sent). `never`: more than
    the whole daily cap, so no run can make it."""

    worst: Decimal
    never: bool = False


class Dispatcher:
    """Sends records; shared by all workers of a run (one event loop, no locks needed)."""

    def __init__(
        self,
        spec: JobSpec,
        opts: RunOptions,
        *,
        plans: dict[str, TierPlan],
        catalog: Catalog,
        client: OpenRouterClient,
        budget: Budget,
        control: Control,
        book: Book,
        params: dict[str, Any],
        log: Callable[[str], None],
    ) -> None:
        self.spec, self.opts, self.plans, self.catalog = spec, opts, plans, catalog
        self.client, self.budget, self.control, self.book, self._log = (
            client,
            budget,
            control,
            book,
            log,
        )
        self.limiter = Limiter(spec.limits.requests_per_minute, spec.limits.per_model_rpm)
        self.slots = asyncio.Semaphore(spec.limits.concurrency)
        self.params = params  # generation parameters sent with every call
        self._budget_changed = asyncio.Event()
        self._rng = random.Random(opts.jitter_seed)
        self.health = Health(spec.limits, monotonic=opts.monotonic, log=log)
        self._escalate_unavailable = "unavailable" in spec.escalate_on
        self._dearest = catalog.dearest()
        # Per-call constants, computed once: (tier, model) → (extra body, models that may
        # serve); (prompt bound, those models) → worst-case reservation.
        self._extra: dict[tuple[str, str], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self._worst_of: dict[tuple[int, tuple[str, ...]], Decimal] = {}
        self._stream_of: dict[tuple[str, str], bool] = {}
        self.reconciler: Reconciler | None = None  # set by the runner once it exists
        self.budget_short = 0  # records left pending because their worst case did not fit
        self.deferred = 0  # records left pending because their chain was unavailable
        self._next_tier = {t: spec.next_tier(t) for t in spec.tiers}

    def wake(self) -> None:
        """Let calls waiting for budget look again (after a stop, or a settlement)."""
        self._budget_changed.set()

    # ------------------------------------------------------------- a record
    async def process(self, item: WorkItem, trail: Trail) -> None:
        """Send one record until it is done, failed, or (on a stop) left pending."""
        tier = item.tier
        while True:
            nxt = self._next_tier[tier]
            can_escalate = trail.escalations < self.spec.limits.max_escalations and nxt is not None
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

    def _no_fit(self, nf: NoFit) -> str:
        b = self.budget
        return (
            f"worst case ${nf.worst} does not fit in what today's limit leaves "
            f"(${b.spent} spent of ${b.limit}); the next run sends it"
        )

    async def _try_chain(
        self, item: WorkItem, plan: TierPlan, trail: Trail, can_escalate: bool
    ) -> Call | NoFit | None:
        """Walk the tier's chain: a successful call, NoFit when the budget cannot take the
        call now, or None when the chain is done with (`trail.deferred`: it was down)."""
        chain = self.health.usable(plan.models)
        max_attempts = self.spec.limits.max_attempts
        trail.unavailable = False
        for i, model in enumerate(chain):
            for attempt in range(1, max_attempts + 1):
                if self.control.stopping:
                    return None
                call = await self._call(item, plan, model, trail)
                if isinstance(call, NoFit):
                    if not call.never:
                        return call
                    trail.last_error = self._too_big(call, model)  # nothing sent: no attempt
                    break  # a cheaper model of the chain may fit
                if call.error is None:
                    self.health.ok(model)
                    return call
                last = i == len(chain) - 1
                outcome = self._failure(item, plan, call, trail, attempt, last, can_escalate)
                if outcome is AttemptOutcome.RETRY:
                    await self.opts.sleep(self._backoff(attempt, call.error))
                    continue
                trail.escalate = outcome is AttemptOutcome.ESCALATE
                trail.deferred = outcome is AttemptOutcome.DEFERRED
                if outcome in _CHAIN_ENDS:
                    return None
                break  # next model
        if trail.unavailable:  # the chain ran out on models that were down
            trail.escalate = self._escalate_unavailable and can_escalate
            trail.deferred = not trail.escalate
        return None

    def _too_big(self, nf: NoFit, model: str) -> RejectedError:
        return RejectedError(
            f"worst case ${nf.worst} of this request exceeds the whole daily cap "
            f"${self.budget.cap}",
            model=model,
            error_type=TOO_BIG,
        )

    def _failure(
        self,
        item: WorkItem,
        plan: TierPlan,
        call: Call,
        trail: Trail,
        attempt: int,
        last_model: bool,
        can_escalate: bool,
    ) -> AttemptOutcome:
        """Book a failed call and decide what comes next; stop the run if health says so."""
        err = trail.last_error = call.error
        assert err is not None
        stop = self.health.failed(err, item.record.key)
        if stop is not None:
            self.control.stop(stop.status, stop.error)
            self.wake()
        retry = isinstance(err, RetryableError) and attempt < self.spec.limits.max_attempts
        if isinstance(err, RetryableError) and not retry and is_availability(err):
            trail.unavailable = True
        outcome = self._decide(err, retry, last_model, can_escalate, trail)
        self.book.attempt(item, plan.name, trail.attempts, call, outcome)
        if outcome not in (AttemptOutcome.RETRY, AttemptOutcome.FATAL):
            self.health.penalise(call.model, err)
        return outcome

    def _decide(
        self,
        err: UpstreamError,
        retry: bool,
        last_model: bool,
        can_escalate: bool,
        trail: Trail,
    ) -> AttemptOutcome:
        if isinstance(err, FatalUpstreamError):
            credits = isinstance(err, CreditsExhausted)
            self.control.stop(RunStatus.BUDGET_EXHAUSTED if credits else RunStatus.FAILED, err)
            self.wake()
            return AttemptOutcome.FATAL
        if retry and (err.retry_after or 0) <= self.spec.limits.backoff_max_s:
            return AttemptOutcome.RETRY
        if isinstance(err, QualityFailed) and can_escalate:
            return AttemptOutcome.ESCALATE  # design §6: a weak answer goes to a stronger tier
        if not last_model:
            return AttemptOutcome.FALLBACK
        if trail.unavailable:  # some model of the chain was down: it may be back tomorrow
            if self._escalate_unavailable and can_escalate:
                return AttemptOutcome.ESCALATE  # the job opted in to pay more for it
            return AttemptOutcome.DEFERRED
        return AttemptOutcome.FAILED  # rejected by every model: a dearer tier is no cure

    def _backoff(self, attempt: int, err: UpstreamError) -> float:
        lim = self.spec.limits
        delay = min(lim.backoff_max_s, lim.backoff_base_s * 2.0 ** (attempt - 1))
        delay = delay / 2 + self._rng.random() * delay / 2  # "equal jitter"
        return max(delay, err.retry_after or 0.0)

    # -------------------------------------------------------------- budget
    async def _reserve(self, amount: Decimal) -> Reservation | None:
        """Wait until `amount` fits under the limit; None when it cannot fit in this run.

        Settled spend only grows, so when `amount` would not fit even with every call in
        flight settled at $0, waiting cannot help: the record waits for tomorrow and
        dispatch goes on with records that fit.
        """
        while True:
            if self.control.stopping:
                return None
            r = self.budget.try_reserve(amount)
            if r is not None:
                return r
            if self.budget.in_flight == 0 or not self.budget.could_fit(amount):
                return None
            self._budget_changed.clear()  # no await since try_reserve: no wake-up is lost
            await self._budget_changed.wait()

    def _settle(self, r: Reservation, actual: Decimal) -> None:
        # Synchronous on purpose: a cancellation can never leave a reservation open.
        self.budget.settle(r, actual)
        self.wake()

    def _info(self, model: str) -> ModelInfo:
        return self.catalog.get(model) or self._dearest

    def _worst(self, item: WorkItem, models: tuple[str, ...]) -> Decimal:
        """Worst case over every model the request may be served by (native fallback too)."""
        key = (item.prompt_bound, models)
        worst = self._worst_of.get(key)
        if worst is None:
            max_tokens = self.spec.request.max_tokens
            worst = max(
                ceil_usd(
                    worst_case_cost(
                        self._info(m), item.prompt_bound, max_tokens, searches=self._searches(m)
                    )
                )
                for m in models
            )
            if len(self._worst_of) >= 65_536:  # bounded: prompt bounds may all differ
                self._worst_of.clear()
            self._worst_of[key] = worst
        return worst

    def _searches(self, model: str) -> int:
        """Web searches a call may be billed for: `:online` runs the web plugin once."""
        online = model.endswith(":online") or "web_search_options" in self.params
        return 1 if online else 0

    def _extra_body(self, plan: TierPlan, model: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The plan's routing fields for `model`, and the models that may serve the call."""
        key = (plan.name, model)
        found = self._extra.get(key)
        if found is None:
            extra = plan.extra_body(model)
            found = self._extra[key] = (extra, tuple(extra.get("models") or (model,)))
        return found

    def _streams(self, plan: TierPlan, model: str) -> bool:
        """Stream this call? The tier says, else `limits.stream` ("auto": reasoning models)."""
        key = (plan.name, model)
        found = self._stream_of.get(key)
        if found is None:
            mode = self.spec.limits.stream
            if plan.stream is not None:
                found = plan.stream
            elif mode == "auto":
                info = self.catalog.get(model)
                found = info is not None and "reasoning" in info.supported_parameters
            else:
                found = mode == "always"
            self._stream_of[key] = found
        return found

    # ------------------------------------------------------------- one call
    async def _call(self, item: WorkItem, plan: TierPlan, model: str, trail: Trail) -> Call | NoFit:
        """Reserve, pace, send, settle; NoFit when the budget cannot take it (nothing sent)."""
        extra, served_by = self._extra_body(plan, model)
        worst = self._worst(item, served_by)
        if self.budget.exceeds_cap(worst):
            return NoFit(worst, never=True)
        async with self.slots:
            # Fast path without a coroutine; `_reserve` waits when the budget is short.
            r = None if self.control.stopping else self.budget.try_reserve(worst)
            if r is None:
                r = await self._reserve(worst)
            if r is None:
                return NoFit(worst)
            payload = {
                "model": model,
                "messages": item.messages,
                **self.params,
                "usage": {"include": True},
                **extra,
            }
            started = self.opts.now()
            t0 = self.opts.monotonic()
            token = self.book.sending(item, plan.name, trail.attempts + 1, model, started, worst)
            try:
                if self.limiter.active:
                    await self.limiter.acquire(model)
                    t0 = self.opts.monotonic()
                completion = await self.client.complete(
                    payload,
                    stream=self._streams(plan, model),
                    idle_timeout_s=self.spec.limits.idle_timeout_s,
                    stream_max_s=self.spec.limits.stream_max_s,
                )
            except UpstreamError as err:
                call = self._failed(r, worst, model, started, t0, err)
            except asyncio.CancelledError:
                self._cancelled(r, worst, item, plan, model, started, trail)
                raise
            except Exception:  # a bug, not an answer: the call may have been billed
                self._settle(r, worst)
                raise
            else:
                call = self._answered(r, worst, model, started, t0, completion)
            finally:
                self.book.landed(token)
        trail.attempts += 1
        trail.cost += call.cost
        if call.source is CostSource.RESERVED and call.generation_id and self.reconciler:
            self.reconciler.add(
                Unsettled(
                    call.generation_id,
                    self.book.run_id,
                    self.book.job_name,
                    item.record.key,
                    trail.attempts,
                    call.cost,
                    trail,
                )
            )
        if call.completion is not None:
            problem = self._quality_problem(call.completion)
            if problem is not None:
                c, call.completion = call.completion, None
                trail.answer = c  # paid for: stored if nothing better comes
                call.error = QualityFailed(
                    problem.replace("_", " "),
                    model=model,
                    status=200,
                    error_type=problem,
                    cost=call.cost,
                    generation_id=c.generation_id,
                )
        return call

    def _answered(
        self, r: Reservation, worst: Decimal, model: str, started: Any, t0: float, c: Completion
    ) -> Call:
        latency = int((self.opts.monotonic() - t0) * 1000)
        cost, source = self._completion_cost(c, model, worst)
        self._settle(r, cost)
        call = Call(model, started, latency, cost, source, completion=c, reserved=worst)
        call.generation_id = c.generation_id
        if source is CostSource.RESERVED and c.usage.billed is not None:
            msg = (
                f"reported cost ${c.usage.billed} is not plausible for a call reserved at "
                f"${worst}: booked at the reservation"
            )
            call.flag = ("implausible_cost", msg)
            self._log(f"{model}: {msg}")
        return call

    def _failed(
        self,
        r: Reservation,
        worst: Decimal,
        model: str,
        started: Any,
        t0: float,
        err: UpstreamError,
    ) -> Call:
        latency = int((self.opts.monotonic() - t0) * 1000)
        cost, source = self._failed_cost(err, worst)
        self._settle(r, cost)
        call = Call(model, started, latency, cost, source, error=err, reserved=worst)
        call.generation_id = err.generation_id
        return call

    def _cancelled(
        self,
        r: Reservation,
        worst: Decimal,
        item: WorkItem,
        plan: TierPlan,
        model: str,
        started: Any,
        trail: Trail,
    ) -> None:
        """Stopped at once (second Ctrl-C): the provider may still bill this call."""
        self._settle(r, worst)
        trail.attempts += 1
        trail.cost += worst
        err = UpstreamError(
            f"cancelled in flight; the provider may still bill up to ${worst}",
            model=model,
            error_type="cancelled",
        )
        call = Call(model, started, 0, worst, CostSource.RESERVED, error=err, reserved=worst)
        self.book.attempt(item, plan.name, trail.attempts, call, AttemptOutcome.CANCELLED)

    @staticmethod
    def _failed_cost(err: UpstreamError, worst: Decimal) -> tuple[Decimal, CostSource]:
        """What a failed call is booked at. An error status before any generation (4xx, 5xx,
        429) is not billed; anything else may have been (a timeout, a cut connection, an
        error inside a 200 without a cost): its reservation, until /generation says."""
        if err.cost is not None:
            if plausible_cost(err.cost, worst):
                return quantize_usd(err.cost), CostSource.OPENROUTER
            return worst, CostSource.RESERVED
        if err.in_body or err.error_type in UNKNOWN_OUTCOME:
            return worst, CostSource.RESERVED
        return Decimal(0), CostSource.NONE

    def _completion_cost(
        self, c: Completion, model: str, worst: Decimal
    ) -> tuple[Decimal, CostSource]:
        """The cost of an answer: its usage (fee + upstream under BYOK); else, with token
        counts but no cost, the tokens at the dearest prices; else (no usage, a cost that is
        not plausible, BYOK without the upstream figure) the reservation."""
        u = c.usage
        billed = u.billed
        if billed is not None:
            if plausible_cost(billed, worst):
                return quantize_usd(billed), CostSource.OPENROUTER
            return worst, CostSource.RESERVED
        if not u.present or u.cost is not None:  # no usage, or BYOK without upstream cost
            return worst, CostSource.RESERVED
        served = self.catalog.get(c.model) or self._info(model)
        searches = max(u.web_search_requests, self._searches(c.model), self._searches(model))
        # The dearest prices, a search if one may have run, and the BYOK fee: over, not under.
        cost = worst_case_cost(served, u.prompt_tokens, u.completion_tokens, searches=searches)
        return ceil_usd(cost), CostSource.CATALOG

    def _quality_problem(self, c: Completion) -> str | None:
        checks = self.spec.quality
        if "empty" in checks and not (c.content or "").strip():
            return "empty_content"
        if "length" in checks and c.finish_reason == "length":
            return "finish_length"
        if "json" in checks and self.spec.request.wants_json():
            try:
                orjson.loads(c.content or "")
            except orjson.JSONDecodeError:
                return "invalid_json"
        return None
