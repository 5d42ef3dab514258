"""What one call may cost before it is sent, and what it is booked at after (design §5).

Before: the worst case over every model that may serve it (native fallback included), the
request's prompt bound at the dearest prices, `max_tokens` generated, a web search where one
may run, and the BYOK fee. After: the provider's reported cost when it is plausible, else the
token counts at the dearest prices, else the reservation itself — over, never under.

A reported cost above its reservation is booked as reported (it is the bill), and the model's
later calls are reserved at the largest ratio of cost to list-price worst case seen (in the run,
or in the last days' attempts, `store.ratios`): the list price was wrong for that model (a price
above /models, a multiplier, extra searches), and the cap holds only while reservations cover
what calls cost.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_CEILING, Decimal

from batchroute.budget import ceil_usd, plausible_cost, quantize_usd
from batchroute.errors import UpstreamError
from batchroute.plan import RunPlan, WorkItem
from batchroute.types import Completion, CostSource, ResumeState
from batchroute.usd import usd

UNKNOWN_OUTCOME = frozenset({"malformed_response", "connection", "timeout", "no_choices"})
"""Failures after which the provider may still bill a generation: booked at the reservation
until GET /generation tells the real cost (cost_source 'reserved')."""

EDGE_TIMEOUTS = frozenset({524})
"""Statuses of the edge in front of OpenRouter (Cloudflare's 524 "a timeout occurred") after
which the origin goes on with the request: it may be billed, so booked like UNKNOWN_OUTCOME."""

_WORST_CACHE = 65_536  # bounded: prompt bounds may all differ
_RATIO_PLACES = Decimal("0.001")  # a learnt ratio, rounded up
MAX_RATIO = Decimal(10) ** 9
"""A learnt ratio at most: far above any cap already (the model's calls then wait), and a ratio
of a bookable cost (≤ 10^15) to a tiny reservation would not fit Decimal's 28 digits."""

RATIO_MEMORY_DAYS = 7
"""A run's start seeds its `Pricer` from the calls of this UTC day and the 6 before
(docs/design-notes.md, "Learnt cost ratios outlive the run": a nightly job's first wave)."""


def learn_since(day: date) -> date:
    """The first day whose calls seed a run starting on `day`."""
    return day - timedelta(days=RATIO_MEMORY_DAYS - 1)


def learnt_note(resume: ResumeState) -> str | None:
    """The run's and the dry run's words for the ratios in force from the start (None: none)."""
    parts = [f"{m} x{r} its list-price worst case" for m, r in sorted(resume.ratios.items())]
    parts += [f"{m} no less than {usd(f)}" for m, f in sorted(resume.floors.items())]
    if not parts:
        return None
    return (
        f"learnt cost ratios in force (calls of the last {RATIO_MEMORY_DAYS} days were billed "
        f"above their reservation): reserving {'; '.join(parts)}"
    )


def failed_cost(err: UpstreamError, worst: Decimal) -> tuple[Decimal, CostSource]:
    """What a failed call is booked at. An error status before any generation (4xx, 5xx,
    429; not the edge's 524, behind which the origin goes on) is not billed; anything else
    may have been (a timeout, a cut connection, an error inside a 200 without a cost): its
    reservation, until /generation says."""
    if err.cost is not None:
        if plausible_cost(err.cost):  # however far above the reservation: it is the bill
            return quantize_usd(err.cost), CostSource.OPENROUTER
        return worst, CostSource.RESERVED
    if err.in_body or err.error_type in UNKNOWN_OUTCOME or err.status in EDGE_TIMEOUTS:
        return worst, CostSource.RESERVED
    return Decimal(0), CostSource.NONE


class Pricer:
    """Reservations and booked costs of one run, priced by its plan (the same `worst_call`
    the dry run quotes with), with the reservations cached per call shape. What the last
    days' calls taught (`plan.resume`: `store.ratios`) is in force from the first call."""

    def __init__(self, plan: RunPlan) -> None:
        self._plan = plan
        # call shape → (its list-price worst case, its reservation at what was learnt)
        self._price_of: dict[tuple[int, tuple[str, ...]], tuple[Decimal, Decimal]] = {}
        self.ratios = dict(plan.resume.ratios)  # model → cost / list-price worst seen above 1
        self.floors = dict(plan.resume.floors)  # model → a cost seen where the list said $0
        self._may_serve: dict[tuple[str, str], tuple[str, ...]] = {}  # (tier, model) → models

    def price(self, prompt_bound: int, models: tuple[str, ...]) -> tuple[Decimal, Decimal]:
        """A call that any of `models` may serve: (its worst case at list prices, its
        reservation: that × the largest ratio learnt for one of them, and no less than their
        floors). A ratio learnt from a call is measured against the first (`learn`)."""
        key = (prompt_bound, models)
        found = self._price_of.get(key)
        if found is None:
            listed = worst = self._plan.worst_call(models, prompt_bound)
            if self.ratios:
                ratio = max((self.ratios.get(m, Decimal(1)) for m in models), default=Decimal(1))
                worst = ceil_usd(worst * ratio)
            if self.floors:
                worst = max(worst, *(self.floors.get(m, worst) for m in models))
            if len(self._price_of) >= _WORST_CACHE:
                self._price_of.clear()
            found = self._price_of[key] = (listed, worst)
        return found

    def worst(self, prompt_bound: int, models: tuple[str, ...]) -> Decimal:
        """The reservation of a call that any of `models` may serve (`price`'s second)."""
        return self.price(prompt_bound, models)[1]

    def expected(self, amount: Decimal, models: tuple[str, ...]) -> Decimal:
        """A typical call's cost at list prices (`amount`), to `models`, at what was learnt:
        × the largest ratio of one of them, and no less than their floors (the dry run's
        expected cost; a ratio is measured against the worst case, so this is at least)."""
        if self.ratios:
            ratio = max((self.ratios.get(m, Decimal(1)) for m in models), default=Decimal(1))
            amount = ceil_usd(amount * ratio)
        if self.floors:
            amount = max(amount, *(self.floors.get(m, amount) for m in models))
        return amount

    def worst_record(self, item: WorkItem) -> Decimal:
        """`RunPlan.worst_record` at this run's reservations (learnt ratios included): the
        dry run's worst case for a record."""
        plan, attempts = self._plan, self._plan.spec.limits.max_attempts
        return sum(
            (
                self.worst(item.prompt_bound, plan.served_by(t, m)[1]) * attempts
                for t in plan.escalation_path(item.tier)
                for m in plan.tiers[t].models
            ),
            Decimal(0),
        )

    def never(
        self, worst: Decimal, cap: Decimal, prompt_bound: int, models: tuple[str, ...]
    ) -> bool:
        """A call reserved at `worst` can never be made under `cap`: its list-price worst case
        is above the cap too (a learnt ratio alone does not make a record impossible: it waits
        for tomorrow, `pending`, rather than `failed` as `exceeds_daily_cap`)."""
        if worst <= cap:
            return False
        if not self.ratios and not self.floors:  # nothing learnt: `worst` is the list price's
            return True
        return self._plan.worst_call(models, prompt_bound) > cap

    def learn(self, model: str, cost: Decimal, worst: Decimal, listed: Decimal | None) -> None:
        """A call to `model` reserved at `worst`, whose list-price worst case was `listed`,
        was booked at `cost`: above the list, the model's later calls are reserved at that
        ratio (the largest seen), so that the cap holds for them; listed at $0, at no less
        than that cost. (Calls already in flight keep their reservation: they may overrun.)

        The ratio is cost / list price, not cost / reservation: a call reserved at a learnt
        ratio (or at another model's, that may serve it too) and billed at it still says
        what the model bills (review3: a wave in flight compounded it when the base was the
        reservation; and the store seeds a run the same way, `store.ratios`). `listed` None
        (not known): cost / worst × the largest ratio learnt, at least the true one."""
        if listed is not None and cost <= listed:  # the common case, first: nothing to learn
            return  # (listed ≤ worst, so neither a floor nor a ratio would rise)
        free = worst <= 0 or listed == 0  # listed at $0 (a promotion that ended?)
        if free or (model in self.floors and cost > worst):
            if cost > self.floors.get(model, Decimal(0)):
                self.floors[model] = cost  # the largest cost seen, as its floor
                self._price_of.clear()
            if free:
                return
        if listed is not None:
            ratio = cost / listed
        elif cost <= worst:
            return
        else:
            ratio = cost / worst * max(self.ratios.values(), default=Decimal(1))
        ratio = min(ratio, MAX_RATIO).quantize(_RATIO_PLACES, rounding=ROUND_CEILING)
        if ratio > self.ratios.get(model, Decimal(1)):
            self.ratios[model] = ratio
            self._price_of.clear()

    def failed(
        self, err: UpstreamError, model: str, worst: Decimal, listed: Decimal | None = None
    ) -> tuple[Decimal, CostSource]:
        """`failed_cost`, and what it teaches about `model`'s reservations (`learn`). A 5xx with
        a generation id after a web search may be billed for the search, which runs before the
        model (openrouter-api.md §2.6): its reservation, until /generation says (audit4)."""
        cost, source = failed_cost(err, worst)
        searched = err.status >= 500 and self._plan.searches(model)
        if source is CostSource.NONE and err.generation_id and searched:
            return worst, CostSource.RESERVED  # (the reservation itself is no bill: learn nothing)
        if source is not CostSource.RESERVED and (listed is None or cost > listed):
            self.learn(model, cost, worst, listed)  # (the reservation itself is no bill)
        return cost, source

    def answered(
        self, c: Completion, model: str, worst: Decimal, tier: str,
        listed: Decimal | None = None, prompt_bound: int | None = None,
    ) -> tuple[Decimal, CostSource]:  # fmt: skip
        """The cost of an answer to a call to `model` of `tier`: its usage (fee + upstream
        under BYOK); else, with token counts but no cost, the tokens at the dearest terms of
        any model that may have served it; else (no usage, a usage without tokens, a cost
        that is negative or not a number, BYOK without the upstream figure) the reservation.
        A cost above the list price is booked, and raises `model`'s later reservations
        (`learn`); when another model of the call's `models` served it (native fallback),
        that model's too, measured against its own list price (`prompt_bound`: the call's)."""
        cost, source = self._answered(c, model, worst, tier)
        if source is not CostSource.RESERVED:
            if listed is None or cost > listed:  # (the hot path: a call at list price)
                self.learn(model, cost, worst, listed)
            if c.model != model and prompt_bound is not None:
                served = self.served_listed(c.model, tier, model, prompt_bound)
                if served is not None:
                    self.learn(c.model, cost, self.worst(prompt_bound, (c.model,)), served)
        return cost, source

    def served_listed(self, served: str, tier: str, model: str, bound: int) -> Decimal | None:
        """The list-price worst case of a call to `model` (`bound`: its prompt's) had only
        `served` served it, when `served` is one of the call's `models` (native fallback):
        what `served`'s bill teaches is measured against it, in this run (`answered`: a call
        only `served` may serve, another tier or an escalation, is reserved at it; money4)
        and at the next start (`attempts.served_listed_usd`, migration 12). None for a name
        outside the call's `models` (a dated version id)."""
        key = (tier, model)
        models = self._may_serve.get(key)
        if models is None:  # once per tier and model: an answer often names a dated version
            models = self._may_serve[key] = self._plan.served_by(tier, model)[1]
        if served not in models:
            return None
        return self.price(bound, (served,))[0]  # at list prices: before any learnt ratio

    def _answered(
        self, c: Completion, model: str, worst: Decimal, tier: str
    ) -> tuple[Decimal, CostSource]:
        u = c.usage
        billed = u.billed
        if billed is not None:
            if plausible_cost(billed):  # above the reservation too: it is the bill
                return quantize_usd(billed), CostSource.OPENROUTER
            return worst, CostSource.RESERVED
        # No usage, BYOK without the upstream cost, or a usage that says nothing (`{}`, all
        # zeros: no real call has 0 prompt tokens, so its counts are no measure of the bill).
        if not u.present or u.cost is not None or u.prompt_tokens <= 0:
            return worst, CostSource.RESERVED
        plan = self._plan
        served = plan.catalog.get(c.model) or plan.info(model)
        _, models = plan.served_by(tier, model)  # a native fallback's models too
        # Counts above the context window of every model that may have served it are no
        # call's: like a malformed answer, booked at the reservation until /generation says
        # (priced, a few such answers spent a night's cap and taught a ratio for 7 days).
        window = max(
            served.context_length, *(plan.info(m).context_length for m in (model, *models))
        )
        if window > 0 and u.prompt_tokens + u.completion_tokens > window:
            return worst, CostSource.RESERVED
        searches = max(u.web_search_requests, plan.searches(c.model), *map(plan.searches, models))
        # The dearest prices, a search if one may have run, and the BYOK fee: over, not under.
        # The answer names the model without its variant (`:nitro` bills priority rates).
        tokens = (u.prompt_tokens, u.completion_tokens, searches)
        cost = max(plan.terms.priced(served, m, *tokens) for m in (model, *models))
        return cost, CostSource.CATALOG
