"""One call: reserve its worst case, take a slot, pace it, send it, settle what it cost.

Money goes through `Budget` before and after every call, and a call whose outcome is unknown
(a timeout, a cut connection, a cancellation, an answer without a usable cost) keeps its
reservation as spend until GET /generation tells the real cost (design §5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from batchroute.budget import Budget, Reservation, above_reservation
from batchroute.client import OpenRouterClient
from batchroute.errors import UpstreamError
from batchroute.limiter import Limiter
from batchroute.router import TierPlan
from batchroute.runner import quality
from batchroute.runner.book import Book
from batchroute.runner.cost import Pricer
from batchroute.runner.reconcile import Reconciler, Unsettled
from batchroute.runner.request import Requests, Route
from batchroute.runner.work import Call, Control, RunOptions, Trail, WorkItem
from batchroute.spec import JobSpec
from batchroute.types import AttemptOutcome, CallSeen, Completion, CostSource
from batchroute.usd import usd

_RECONCILED = frozenset({CostSource.RESERVED, CostSource.CATALOG})
"""Costs /generation corrects: a reservation, and tokens at /models prices (the endpoint that
served may bill more, audit4)."""
# Read once: an enum member through its class is a metaclass look-up, ~0.24 µs (issue 11).
_RESERVED = CostSource.RESERVED


async def _at_once(result: NoFit) -> NoFit:
    """`result` as an awaitable: `Sender.call` returns a coroutine on every path."""
    return result


@dataclass(frozen=True, slots=True)
class NoFit:
    """The budget could not take a call of `worst` (nothing was sent). `never`: more than
    the whole daily cap, so no run can make it."""

    worst: Decimal
    never: bool = False


class Slots(asyncio.Semaphore):
    """The run's `concurrency` slots: an `asyncio.Semaphore` that can also be taken without a
    coroutine when one is free and no call waits for one (`take`): what `acquire` does then,
    without its coroutine and its `locked()` generator, ~1.6k instructions a call (issue 11).
    Nothing is awaited on that path, so no cancellation can land in it."""

    def take(self) -> bool:
        """Take a slot now if one is free and nobody queues for one; else False (`acquire`)."""
        if self._value > 0 and not self._waiters:
            self._value -= 1
            return True
        return False


class Sender:
    """Sends calls for every worker of a run (one event loop, no locks needed)."""

    def __init__(
        self,
        spec: JobSpec,
        opts: RunOptions,
        *,
        requests: Requests,
        pricer: Pricer,
        client: OpenRouterClient,
        budget: Budget,
        control: Control,
        book: Book,
        log: Callable[[str], None],
    ) -> None:
        self.spec, self.opts, self.requests, self.pricer = spec, opts, requests, pricer
        self.client, self.budget, self.control, self.book = client, budget, control, book
        self._log = log
        self.limiter = Limiter(spec.limits.requests_per_minute, spec.limits.per_model_rpm)
        self.slots = Slots(spec.limits.concurrency)
        self._wants_json = spec.request.wants_json()  # per job, not per call
        self._checks = spec.quality
        self._idle_timeout_s = spec.limits.idle_timeout_s
        self._stream_max_s = spec.limits.stream_max_s
        self._model_slots = {
            m: asyncio.Semaphore(n) for m, n in spec.limits.per_model_concurrency.items()
        }
        self._budget_changed = asyncio.Event()
        self.reconciler: Reconciler | None = None  # set by the runner once it exists

    def wake(self) -> None:
        """Let calls waiting for budget look again (after a stop, or a settlement)."""
        self._budget_changed.set()

    def call(
        self, item: WorkItem, plan: TierPlan, model: str, trail: Trail
    ) -> Coroutine[Any, Any, Call | NoFit]:
        """Reserve, pace, send, settle; NoFit when the budget cannot take it (nothing sent).

        Everything a call may wait for that concerns only its own model (the model's
        concurrency, its rpm) or only its own money (the budget) is waited for *before* it
        takes one of the run's `concurrency` slots, so a slow or rate-limited tier never
        holds the slots other tiers need (issue 11).

        Returns the coroutine to await: `_paced` itself when the model has no slot of its own
        (one coroutine a call, not two: each level costs every call ~1.4k instructions, more
        with each time the call waits: issue 11).
        """
        route = self.requests.route(plan, model)
        models = route.models
        listed, worst = self.pricer.price(item.prompt_bound, models)
        if worst > self.budget.cap and self.pricer.never(  # = budget.exceeds_cap, inlined
            worst, self.budget.cap, item.prompt_bound, models
        ):
            return _at_once(NoFit(worst, never=True))
        model_slot = self._model_slots.get(model)
        if model_slot is None:  # no `async with nullcontext()`: ~1 µs a call (issue 11)
            return self._paced(worst, listed, route, item, plan, model, trail)
        return self._in_model_slot(model_slot, worst, listed, route, item, plan, model, trail)

    async def _in_model_slot(
        self, slot: asyncio.Semaphore, worst: Decimal, listed: Decimal, route: Route,
        item: WorkItem, plan: TierPlan, model: str, trail: Trail,
    ) -> Call | NoFit:  # fmt: skip
        async with slot:
            return await self._paced(worst, listed, route, item, plan, model, trail)

    def _after(self, call: Call, item: WorkItem, model: str, trail: Trail) -> Call:
        """A call sent: counted on its record's trail, handed to the reconciler when its cost
        is to be corrected, and its answer checked (a quality failure makes it an error)."""
        trail.attempts += 1
        trail.cost += call.cost
        if call.source in _RECONCILED and call.generation_id and self.reconciler:
            self.reconciler.add(
                Unsettled(
                    call.generation_id,
                    self.book.run_id,
                    self.book.job_name,
                    item.record.key,
                    trail.attempts,
                    call.cost,
                    trail,
                    item.tier,
                    call.model,
                    call.source,
                    call.listed,
                    call.served,
                    call.served_listed,
                )
            )
        c = call.completion
        if c is not None:
            found = quality.problem(c, self._checks, wants_json=self._wants_json)
            if found is not None:
                trail.answer, call.completion = c, None  # paid for: stored if nothing better
                call.error = quality.failure(found, c, model=model, cost=call.cost)
        return call

    async def _paced(
        self, worst: Decimal, listed: Decimal, route: Route, item: WorkItem,
        plan: TierPlan, model: str, trail: Trail,
    ) -> Call | NoFit:  # fmt: skip
        """Inside the model's own slot: its rpm, the budget, then one of the run's slots, in
        which the call is sent (`listed`: its worst case at list prices; `route`: its request's
        constant parts, and the models that may serve it); then `_after`."""
        if self.limiter.active:
            await self.limiter.acquire_model(model)
        # Fast path without a coroutine; `_reserve` waits when the budget is short.
        r = None if self.control.stopping else self.budget.try_reserve(worst)
        if r is None:
            r = await self._reserve(worst)
        if r is not None and (self.pricer.ratios or self.pricer.floors):  # something learnt
            r, worst = await self._repriced(r, worst, item.prompt_bound, route.models)
        if r is None:
            return NoFit(worst)
        if not self.slots.take():  # none free, or others queued: wait in turn
            await self._slot(r)
        # The call itself, inlined rather than one more coroutine a call (issue 11); the
        # reservation is settled on every path.
        try:
            payload = self.requests.body(item, model, route)
            started = self.opts.now()
            t0 = self.opts.monotonic()
            token = self.book.sending(
                item, plan.name, trail.attempts + 1, model, started, worst, listed
            )
            seen = self.book.seen(token)  # journals the generation id once known (audit4)
            try:
                if self.book.journal.tight:  # little room on its disk: a write() per call
                    self.book.journal.sync()  # its in-flight mark is written before it goes out
                if self.limiter.active:
                    await self.limiter.acquire_global()
                    t0 = self.opts.monotonic()
                completion = await self.client.complete(
                    payload,
                    stream=route.stream,
                    idle_timeout_s=self._idle_timeout_s,
                    stream_max_s=self._stream_max_s,
                    seen=seen,
                )
            except UpstreamError as err:
                call = self._failed(r, (worst, listed), model, started, t0, err)
                return self._after(call, item, model, trail)
            except asyncio.CancelledError:
                self._cancelled(r, (worst, listed), item, plan, model, started, trail, seen)
                raise
            except Exception:  # a bug, not an answer: the call may have been billed
                self._settle(r, worst)
                raise
            else:
                price = (worst, listed, item.prompt_bound)
                call = self._answered(r, price, plan.name, model, started, t0, completion)
                call.flight = self.book.flight(token)  # its attempt line begins as this
                return self._after(call, item, model, trail)
            finally:
                self.book.landed(token)
        finally:
            self.slots.release()

    async def _slot(self, r: Reservation) -> None:
        """Wait for one of the run's slots (`r`: the call's reservation, settled at $0 if the
        wait is cancelled: nothing was sent)."""
        try:
            await self.slots.acquire()
        except BaseException:
            self._settle(r, Decimal(0))
            raise

    async def _repriced(
        self, r: Reservation, worst: Decimal, prompt_bound: int, models: tuple[str, ...]
    ) -> tuple[Reservation | None, Decimal]:
        """The reservation at the model's price now. It was priced before waiting for the
        model's slot, its rpm or the budget: an overrun that landed meanwhile raised the
        model's reservation, and a queued call sent at the old one overran too (review3: with
        one call in flight at a time). None when the new figure does not fit."""
        res: Reservation | None = r
        while res is not None:
            fresh = self.pricer.worst(prompt_bound, models)
            if fresh <= worst:
                break
            self._settle(res, Decimal(0))  # nothing sent: reserve the learnt figure instead
            worst = fresh
            res = None if self.control.stopping else self.budget.try_reserve(worst)
            if res is None:
                res = await self._reserve(worst)
        return res, worst

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
        self._budget_changed.set()  # = wake(), a call less on every call (issue 11)

    # ------------------------------------------------------------ outcomes
    def _answered(
        self,
        r: Reservation,
        price: tuple[Decimal, Decimal, int],
        tier: str,
        model: str,
        started: datetime,
        t0: float,
        c: Completion,
    ) -> Call:
        latency = int((self.opts.monotonic() - t0) * 1000)
        worst, listed, bound = price  # reserved, at list prices, the prompt's bound
        cost, source = self.pricer.answered(c, model, worst, tier, listed, bound)
        self._settle(r, cost)
        call = Call(model, started, latency, cost, source, c, None, worst, c.generation_id)
        call.listed, call.served = listed, c.model
        if c.model != model:  # a native fallback served: its own list price, for the seed
            call.served_listed = self.pricer.served_listed(c.model, tier, model, bound)
        if source is _RESERVED and c.usage.billed is not None:
            msg = (
                f"reported cost {usd(c.usage.billed)} is not plausible for a call reserved at "
                f"{usd(worst)}: booked at the reservation"
            )
            call.flag = ("implausible_cost", msg)
            self._log(f"{model}: {msg}")
        elif above_reservation(cost, worst):  # booked as reported; later calls reserve more
            msg = f"cost {usd(cost)} is above twice its reservation {usd(worst)}: booked as billed"
            call.flag = ("cost_above_reservation", msg)
            self._log(f"{model}: {msg}")
        return call

    def _failed(
        self,
        r: Reservation,
        price: tuple[Decimal, Decimal],
        model: str,
        started: datetime,
        t0: float,
        err: UpstreamError,
    ) -> Call:
        latency = int((self.opts.monotonic() - t0) * 1000)
        worst, listed = price  # reserved, and at list prices
        cost, source = self.pricer.failed(err, model, worst, listed)
        self._settle(r, cost)
        call = Call(model, started, latency, cost, source, error=err, reserved=worst)
        call.generation_id, call.listed = err.generation_id, listed
        return call

    def _cancelled(
        self,
        r: Reservation,
        price: tuple[Decimal, Decimal],
        item: WorkItem,
        plan: TierPlan,
        model: str,
        started: datetime,
        trail: Trail,
        seen: CallSeen,
    ) -> None:
        """Stopped at once (second Ctrl-C): the provider may still bill this call. Its id, if
        the client had it, is kept: the next run asks /generation what it really cost."""
        worst, listed = price
        self._settle(r, worst)
        trail.attempts += 1
        trail.cost += worst
        err = UpstreamError(
            f"cancelled in flight; the provider may still bill up to {usd(worst)}",
            model=model,
            error_type="cancelled",
        )
        call = Call(model, started, 0, worst, CostSource.RESERVED, error=err, reserved=worst)
        call.generation_id, call.listed = seen.generation_id, listed
        self.book.attempt(item, plan.name, trail.attempts, call, AttemptOutcome.CANCELLED)
