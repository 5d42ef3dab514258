"""Dispatch: one record through its tier's fallback chain, under the budget and the limiter.

The policy of design §6 lives here: retry the same model with backoff (RetryableError), move
to the next model (RejectedError, retries used up), escalate to the next tier (chain
exhausted, or an answer that failed a quality check), stop the run (FatalUpstreamError).
Decisions come from exception types; money goes through `Budget` before and after each call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from batchroute.budget import Budget, Reservation, ceil_usd, quantize_usd, worst_case_cost
from batchroute.catalog import Catalog, ModelInfo
from batchroute.client import OpenRouterClient
from batchroute.errors import (
    CreditsExhausted,
    DailyCapReached,
    FatalUpstreamError,
    QualityFailed,
    RetryableError,
    UpstreamError,
)
from batchroute.limiter import Limiter
from batchroute.router import TierPlan
from batchroute.runner.book import Book
from batchroute.runner.work import Call, Control, RunOptions, Trail, WorkItem
from batchroute.spec import JobSpec
from batchroute.types import AttemptOutcome, Completion, CostSource, RunStatus

# Failures whose answer was generated (so billed) but whose usage never arrived: their cost is
# asked of GET /generation, waiting this long before each try (design §4, cost_source).
UNREAD_BODY = frozenset({"malformed_response", "connection", "timeout"})
GENERATION_POLL_S = (0.0, 0.5, 1.0, 2.0, 4.0)


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
        self._cooled: dict[str, float] = {}  # model → monotonic time it may be used again
        self._capped: dict[str, float] = {}  # model → monotonic time its free daily cap resets
        self._streak: dict[str, int] = {}  # consecutive availability failures per model
        self._dearest = catalog.dearest()
        # Per-call constants, computed once: (tier, model) → (extra body, models that may
        # serve); (prompt bound, those models) → worst-case reservation.
        self._extra: dict[tuple[str, str], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self._worst_of: dict[tuple[int, tuple[str, ...]], Decimal] = {}
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
            if call is not None and call.completion is not None:
                self.book.done(item, tier, trail, call)
                return
            if self.control.stopping:  # budget, fatal error or interrupt: next run retries
                self.book.pending(item, trail)
                return
            if not can_escalate or nxt is None:
                self.book.failed(item, tier, trail)
                return
            tier = nxt
            trail.escalations += 1

    def _chain(self, plan: TierPlan) -> list[str]:
        if not self._capped and not self._cooled:  # the usual case: every model is open
            return list(plan.models)
        now = self.opts.monotonic()
        # A model at its free daily cap is never retried before the cap resets (pitfall 7).
        open_ = [m for m in plan.models if self._capped.get(m, 0) <= now]
        usable = [m for m in open_ if self._cooled.get(m, 0) <= now]
        return usable or open_  # all cooled down: try them anyway rather than fail blind

    async def _try_chain(
        self, item: WorkItem, plan: TierPlan, trail: Trail, can_escalate: bool
    ) -> Call | None:
        """Walk the tier's chain; a successful call, or None when the chain is done with."""
        chain = self._chain(plan)
        max_attempts = self.spec.limits.max_attempts
        for i, model in enumerate(chain):
            last_model = i == len(chain) - 1
            for attempt in range(1, max_attempts + 1):
                if self.control.stopping:
                    return None
                call = await self._call(item, plan, model, trail)
                if call is None:  # the budget said no before anything was sent
                    return None
                if call.error is None:
                    self._streak.pop(model, None)  # cooldown counts *consecutive* failures
                    return call
                err = trail.last_error = call.error
                retry = isinstance(err, RetryableError) and attempt < max_attempts
                outcome = self._decide(err, retry, last_model, can_escalate)
                self.book.attempt(item, plan.name, trail.attempts, call, outcome)
                if outcome is AttemptOutcome.RETRY:
                    await self.opts.sleep(self._backoff(attempt, err))
                    continue
                if outcome is AttemptOutcome.FATAL:
                    return None
                self._penalise(model, err)
                if outcome is AttemptOutcome.ESCALATE:
                    return None
                break  # next model
        return None

    def _decide(
        self, err: UpstreamError, retry: bool, last_model: bool, can_escalate: bool
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
        return AttemptOutcome.ESCALATE if can_escalate else AttemptOutcome.FAILED

    def _backoff(self, attempt: int, err: UpstreamError) -> float:
        lim = self.spec.limits
        delay = min(lim.backoff_max_s, lim.backoff_base_s * 2.0 ** (attempt - 1))
        delay = delay / 2 + self._rng.random() * delay / 2  # "equal jitter"
        return max(delay, err.retry_after or 0.0)

    def _penalise(self, model: str, err: UpstreamError) -> None:
        """Cool a model down after repeated availability failures (not per-record rejections)."""
        now, lim = self.opts.monotonic(), self.spec.limits
        if isinstance(err, DailyCapReached):
            wait = (err.reset_at - time.time()) if err.reset_at else lim.cooldown_s
            self._capped[model] = now + max(wait, lim.cooldown_s)
            self._log(f"{model} reached its free daily cap; not used again before it resets")
            return
        if err.retry_after and err.retry_after > lim.backoff_max_s:
            self._cooled[model] = now + err.retry_after  # told to stay away longer than we wait
        if isinstance(err, QualityFailed) or err.status in (400, 403, 413, 422):
            return
        self._streak[model] = self._streak.get(model, 0) + 1
        if self._streak[model] >= lim.cooldown_after:
            self._cooled[model] = max(self._cooled.get(model, 0), now + lim.cooldown_s)
            self._streak[model] = 0
            self._log(f"cooling down {model} for {lim.cooldown_s:g} s")

    # -------------------------------------------------------------- budget
    async def _reserve(self, amount: Decimal) -> Reservation | None:
        """Wait until `amount` fits under the cap; None when the day's budget is spent."""
        while True:
            if self.control.stopping:
                return None
            r = self.budget.try_reserve(amount)
            if r is not None:
                return r
            if self.budget.in_flight == 0:
                self.control.stop(RunStatus.BUDGET_EXHAUSTED)
                self._log(
                    f"daily budget reached: ${self.budget.spent} of ${self.budget.cap}; "
                    "the rest stays pending for the next run"
                )
                self.wake()
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
                ceil_usd(worst_case_cost(self._info(m), item.prompt_bound, max_tokens))
                for m in models
            )
            if len(self._worst_of) >= 65_536:  # bounded: prompt bounds may all differ
                self._worst_of.clear()
            self._worst_of[key] = worst
        return worst

    def _extra_body(self, plan: TierPlan, model: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The plan's routing fields for `model`, and the models that may serve the call."""
        key = (plan.name, model)
        found = self._extra.get(key)
        if found is None:
            extra = plan.extra_body(model)
            found = self._extra[key] = (extra, tuple(extra.get("models") or (model,)))
        return found

    # ------------------------------------------------------------- one call
    async def _call(self, item: WorkItem, plan: TierPlan, model: str, trail: Trail) -> Call | None:
        """Reserve, pace, send, settle. None if the budget is exhausted (nothing was sent)."""
        extra, served_by = self._extra_body(plan, model)
        worst = self._worst(item, served_by)
        async with self.slots:
            # Fast path without a coroutine; `_reserve` waits when the budget is short.
            r = None if self.control.stopping else self.budget.try_reserve(worst)
            if r is None:
                r = await self._reserve(worst)
            if r is None:
                return None
            payload = {
                "model": model,
                "messages": item.messages,
                **self.params,
                "usage": {"include": True},
                **extra,
            }
            started = self.opts.now()
            t0 = self.opts.monotonic()
            try:
                if self.limiter.active:
                    await self.limiter.acquire(model)
                    t0 = self.opts.monotonic()
                completion = await self.client.complete(payload)
            except UpstreamError as err:
                return await self._failed(r, worst, model, started, t0, err, trail)
            except asyncio.CancelledError:
                self._cancelled(r, worst, item, plan, model, started, trail)
                raise
            latency = int((self.opts.monotonic() - t0) * 1000)
            cost, source = self._completion_cost(completion, self._info(model))
            self._settle(r, cost)
        trail.attempts += 1
        trail.cost += cost
        call = Call(model, started, latency, cost, source, completion=completion)
        problem = self._quality_problem(completion)
        if problem is not None:
            call.completion = None
            call.error = QualityFailed(
                problem.replace("_", " "),
                model=model,
                status=200,
                error_type=problem,
                cost=cost,
                generation_id=completion.generation_id,
            )
        return call

    async def _failed(
        self,
        r: Reservation,
        worst: Decimal,
        model: str,
        started: Any,
        t0: float,
        err: UpstreamError,
        trail: Trail,
    ) -> Call:
        latency = int((self.opts.monotonic() - t0) * 1000)
        try:
            known, source = await self._failed_cost(err)
        except asyncio.CancelledError:
            self._settle(r, worst)
            raise
        # Billed but never told: keep the worst case on today's books so the cap stays safe.
        self._settle(r, worst if known is None else known)
        cost = known or Decimal(0)
        trail.attempts += 1
        trail.cost += cost
        return Call(model, started, latency, cost, source, error=err)

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
        err = UpstreamError(
            f"cancelled in flight; the provider may still bill up to ${worst}",
            model=model,
            error_type="cancelled",
        )
        call = Call(model, started, 0, Decimal(0), CostSource.NONE, error=err)
        self.book.attempt(item, plan.name, trail.attempts, call, AttemptOutcome.CANCELLED)

    async def _failed_cost(self, err: UpstreamError) -> tuple[Decimal | None, CostSource]:
        """What a failed call cost: as the error reported it, else for an answer whose body was
        cut off (billed, usage unread) what GET /generation says; None if it never says."""
        if err.cost is not None:
            return quantize_usd(err.cost), CostSource.OPENROUTER
        if err.generation_id is None or err.error_type not in UNREAD_BODY:
            return Decimal(0), CostSource.NONE
        for delay in GENERATION_POLL_S:  # the stats appear a moment after the call
            await self.opts.sleep(delay)
            try:
                cost = await self.client.generation_cost(err.generation_id)
            except UpstreamError:
                break
            if cost is not None:
                return quantize_usd(cost), CostSource.GENERATION
        self._log(f"cost of {err.generation_id} unknown (no /generation answer); booked at worst")
        return None, CostSource.NONE

    def _completion_cost(self, c: Completion, info: ModelInfo) -> tuple[Decimal, CostSource]:
        if c.usage.cost is not None:
            return quantize_usd(c.usage.cost), CostSource.OPENROUTER
        served = self.catalog.get(c.model) or info
        cost = served.cost(c.usage.prompt_tokens, c.usage.completion_tokens)
        return quantize_usd(cost), CostSource.CATALOG

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
