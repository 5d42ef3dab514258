"""What one call may cost before it is sent, and what it is booked at after (design §5).

Before: the worst case over every model that may serve it (native fallback included), the
request's prompt bound at the dearest prices, `max_tokens` generated, a web search where one
may run, and the BYOK fee. After: the provider's reported cost when it is plausible, else the
token counts at the dearest prices, else the reservation itself — over, never under.
"""

from __future__ import annotations

from decimal import Decimal

from batchroute.budget import plausible_cost, quantize_usd
from batchroute.errors import UpstreamError
from batchroute.plan import RunPlan
from batchroute.types import Completion, CostSource

UNKNOWN_OUTCOME = frozenset({"malformed_response", "connection", "timeout", "no_choices"})
"""Failures after which the provider may still bill a generation: booked at the reservation
until GET /generation tells the real cost (cost_source 'reserved')."""

EDGE_TIMEOUTS = frozenset({524})
"""Statuses of the edge in front of OpenRouter (Cloudflare's 524 "a timeout occurred") after
which the origin goes on with the request: it may be billed, so booked like UNKNOWN_OUTCOME."""

_WORST_CACHE = 65_536  # bounded: prompt bounds may all differ


def failed_cost(err: UpstreamError, worst: Decimal) -> tuple[Decimal, CostSource]:
    """What a failed call is booked at. An error status before any generation (4xx, 5xx,
    429; not the edge's 524, behind which the origin goes on) is not billed; anything else
    may have been (a timeout, a cut connection, an error inside a 200 without a cost): its
    reservation, until /generation says."""
    if err.cost is not None:
        if plausible_cost(err.cost, worst):
            return quantize_usd(err.cost), CostSource.OPENROUTER
        return worst, CostSource.RESERVED
    if err.in_body or err.error_type in UNKNOWN_OUTCOME or err.status in EDGE_TIMEOUTS:
        return worst, CostSource.RESERVED
    return Decimal(0), CostSource.NONE


class Pricer:
    """Reservations and booked costs of one run, priced by its plan (the same `worst_call`
    the dry run quotes with), with the reservations cached per call shape."""

    def __init__(self, plan: RunPlan) -> None:
        self._plan = plan
        self._worst_of: dict[tuple[int, tuple[str, ...]], Decimal] = {}

    def worst(self, prompt_bound: int, models: tuple[str, ...]) -> Decimal:
        """The reservation of a call that any of `models` may serve."""
        key = (prompt_bound, models)
        worst = self._worst_of.get(key)
        if worst is None:
            worst = self._plan.worst_call(models, prompt_bound)
            if len(self._worst_of) >= _WORST_CACHE:
                self._worst_of.clear()
            self._worst_of[key] = worst
        return worst

    def answered(
        self, c: Completion, model: str, worst: Decimal, tier: str
    ) -> tuple[Decimal, CostSource]:
        """The cost of an answer to a call to `model` of `tier`: its usage (fee + upstream
        under BYOK); else, with token counts but no cost, the tokens at the dearest terms of
        any model that may have served it; else (no usage, a usage without tokens, a cost
        that is not plausible, BYOK without the upstream figure) the reservation."""
        u = c.usage
        billed = u.billed
        if billed is not None:
            if plausible_cost(billed, worst):
                return quantize_usd(billed), CostSource.OPENROUTER
            return worst, CostSource.RESERVED
        # No usage, BYOK without the upstream cost, or a usage that says nothing (`{}`, all
        # zeros: no real call has 0 prompt tokens, so its counts are no measure of the bill).
        if not u.present or u.cost is not None or u.prompt_tokens <= 0:
            return worst, CostSource.RESERVED
        plan = self._plan
        served = plan.catalog.get(c.model) or plan.info(model)
        _, models = plan.served_by(tier, model)  # a native fallback's models too
        searches = max(u.web_search_requests, plan.searches(c.model), *map(plan.searches, models))
        # The dearest prices, a search if one may have run, and the BYOK fee: over, not under.
        # The answer names the model without its variant (`:nitro` bills priority rates).
        tokens = (u.prompt_tokens, u.completion_tokens, searches)
        cost = max(plan.terms.priced(served, m, *tokens) for m in (model, *models))
        return cost, CostSource.CATALOG
