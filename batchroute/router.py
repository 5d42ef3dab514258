"""Router stage: classification → tier → ordered model chain. Pure and synchronous.

It also resolves `cheapest: true` tiers against the price catalogue at run start. It knows
nothing of HTTP, budget or storage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from batchroute.catalog import Catalog, ModelInfo
from batchroute.errors import SpecError
from batchroute.spec import JobSpec, TierSpec
from batchroute.types import Classification

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class TierPlan:
    """A tier as the runner uses it: resolved models plus pass-through routing options."""

    name: str
    models: tuple[str, ...]
    native_fallback: bool = False
    provider: dict[str, Any] | None = None
    concurrency: int | None = None
    stream: bool | None = None  # None: the job's `limits.stream` decides
    batch: bool = False  # sent through the Batch API (runner/lane.py), not one call at a time

    def extra_body(self, model: str) -> dict[str, Any]:
        """OpenRouter routing fields for a call to `model` (server-side fallback, provider)."""
        body: dict[str, Any] = {}
        if self.native_fallback:
            rest = [m for m in self.models if m != model]
            if rest:
                # OpenRouter rejects more than 3 entries in `models`.
                body["models"] = [model, *rest][:3]
        if self.provider:
            body["provider"] = self.provider
        return body


def choose_tier(c: Classification, spec: JobSpec, *, explicit_task: bool) -> str:
    """Tier for a classified record.

    A task type given by the job or the record decides alone. A guessed one decides too, but its
    complexity sets a floor one tier below the complexity's own tier, so a very hard "simple"
    question still reaches a capable model while easy work never climbs.
    """
    by_task = spec.tier_for_task(c.task_type)
    if explicit_task:
        return by_task
    names = list(spec.tiers)
    floor = max(names.index(spec.tier_for_complexity(c.complexity)) - 1, 0)
    return names[max(names.index(by_task), floor)]


def _fits(m: ModelInfo, t: TierSpec) -> bool:
    if m.variable_price or m.is_free:
        return False
    if t.min_context and m.context_length < t.min_context:
        return False
    if any(n not in m.supported_parameters for n in t.needs):
        return False
    mp = t.max_price
    if mp is not None:
        if mp.prompt is not None and m.prompt * MILLION > mp.prompt:
            return False
        if mp.completion is not None and m.completion * MILLION > mp.completion:
            return False
    return True


def resolve_tiers(spec: JobSpec, catalog: Catalog) -> dict[str, TierPlan]:
    """Turn the job's tiers into plans; `cheapest` tiers pick from the catalogue by price."""
    plans: dict[str, TierPlan] = {}
    for name, t in spec.tiers.items():
        models = t.models
        if t.cheapest:
            fitting = [m for m in catalog.models.values() if _fits(m, t)]
            fitting.sort(key=lambda m: (m.prompt + m.completion, m.id))
            models = tuple(m.id for m in fitting[: t.count]) or t.models
        plans[name] = TierPlan(
            name, models, t.native_fallback, t.provider, t.concurrency, t.stream, t.batch
        )
    return plans


def check_plans(
    plans: dict[str, TierPlan], catalog: Catalog, *, live: bool = False
) -> tuple[dict[str, TierPlan], list[str]]:
    """The plans to run and warnings about them; a SpecError for a tier that cannot run.

    A model missing from a catalogue fetched live from the endpoint is retired or misspelt: it
    is dropped from its chain (never called) with one warning. Against a cached or shipped
    catalogue it may simply be newer than the copy, so it stays, budgeted at the dearest
    known prices. A variable-priced router ("-1", e.g. openrouter/auto), an empty `cheapest`
    tier, or a tier left with no model is an error.
    """
    warnings = []
    kept: dict[str, TierPlan] = {}
    for plan in plans.values():
        if not plan.models:
            raise SpecError(
                "no model in the catalogue meets this `cheapest` tier's criteria",
                key=f"tiers.{plan.name}",
            )
        models = []
        for m in plan.models:
            info = catalog.get(m)
            if info is None and live:
                warnings.append(
                    f"model {m!r} (tier {plan.name}) is not in the live catalogue of "
                    f"{catalog.source} (retired or misspelt?): dropped from the chain"
                )
                continue
            if info is None:
                warnings.append(
                    f"model {m!r} (tier {plan.name}) is not in the catalogue of "
                    f"{catalog.fetched_at} (retired or misspelt?): budgeted at the highest "
                    "known price; fallback skips it if it fails"
                )
            elif info.variable_price:
                raise SpecError(
                    f"{m} has a variable price ('-1') and cannot be budgeted under a cap",
                    key=f"tiers.{plan.name}",
                )
            models.append(m)
        if not models:
            raise SpecError(
                f"none of this tier's models is in the live catalogue of {catalog.source}: "
                f"{', '.join(plan.models)}",
                key=f"tiers.{plan.name}",
            )
        kept[plan.name] = replace(plan, models=tuple(models))
    return kept, warnings
