"""Dry run: classify, route and price every record without a single call.

A wiring module like the runner (reader → prepare → router → budget arithmetic), but it sends
nothing and writes nothing. Prices come from the store's cached catalogue, else the shipped one.

Expected cost assumes a typical answer (`TYPICAL_COMPLETION_TOKENS`, capped by max_tokens) from
the first model of the record's tier and a prompt of about 4 bytes per token. The worst case
follows what the runner may do: every model of the record's chain and of each tier it may
escalate to returns an answer that is billed in full (prompt bound + max_tokens) and then
rejected, on every one of its `max_attempts` tries: an answer cut off in transit (malformed
body, reset connection) is billed, its cost recovered via /generation, and then retried.
Errors before any token are unbilled (OpenRouter's zero-completion insurance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from batchroute.budget import ceil_usd, prompt_token_bound, quantize_usd, worst_case_cost
from batchroute.catalog import Catalog, ModelInfo
from batchroute.prompt import request_params
from batchroute.reader import read_records
from batchroute.router import TierPlan, check_plans, resolve_tiers
from batchroute.runner import prepare_record
from batchroute.spec import JobSpec
from batchroute.store import ResultStore
from batchroute.types import TASK_TYPES, RecordStatus

TYPICAL_COMPLETION_TOKENS = 256


@dataclass
class TierQuote:
    tier: str
    models: tuple[str, ...]
    records: int = 0
    expected_usd: Decimal = Decimal(0)
    worst_usd: Decimal = Decimal(0)


@dataclass
class Quote:
    job_name: str
    cap_usd: Decimal
    spent_today_usd: Decimal
    tiers: dict[str, TierQuote]
    invalid: int = 0
    skipped: int = 0
    catalog: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(t.records for t in self.tiers.values())

    @property
    def expected_usd(self) -> Decimal:
        return sum((t.expected_usd for t in self.tiers.values()), Decimal(0))

    @property
    def worst_usd(self) -> Decimal:
        return sum((t.worst_usd for t in self.tiers.values()), Decimal(0))

    @property
    def remaining_usd(self) -> Decimal:
        return max(self.cap_usd - self.spent_today_usd, Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job_name,
            "records": self.records,
            "invalid": self.invalid,
            "skipped_already_final": self.skipped,
            "tiers": [
                {
                    "tier": t.tier,
                    "models": list(t.models),
                    "records": t.records,
                    "expected_usd": str(t.expected_usd),
                    "worst_usd": str(t.worst_usd),
                }
                for t in self.tiers.values()
            ],
            "expected_usd": str(self.expected_usd),
            "worst_usd": str(self.worst_usd),
            "cap_usd": str(self.cap_usd),
            "spent_today_usd": str(self.spent_today_usd),
            "remaining_usd": str(self.remaining_usd),
            "fits_expected": self.expected_usd <= self.remaining_usd,
            "fits_worst": self.worst_usd <= self.remaining_usd,
            "catalog": self.catalog,
            "notes": self.notes,
        }


class _Pricer:
    def __init__(self, spec: JobSpec, catalog: Catalog, plans: dict[str, TierPlan]) -> None:
        self.spec, self.catalog, self.plans = spec, catalog, plans
        self.dearest = catalog.dearest()

    def info(self, model: str) -> ModelInfo:
        return self.catalog.get(model) or self.dearest

    def path(self, tier: str) -> list[str]:
        """The tier and every tier the record may escalate to."""
        out = [tier]
        for _ in range(self.spec.limits.max_escalations):
            nxt = self.spec.next_tier(out[-1])
            if nxt is None:
                break
            out.append(nxt)
        return out

    def price(self, tier: str, messages: list[dict[str, str]]) -> tuple[Decimal, Decimal]:
        max_tokens, attempts = self.spec.request.max_tokens, self.spec.limits.max_attempts
        bound = prompt_token_bound(m["content"] for m in messages)
        typical_prompt = sum(len(m["content"].encode()) // 4 + 4 for m in messages)
        first = self.info(self.plans[tier].models[0])
        expected = first.cost(typical_prompt, min(max_tokens, TYPICAL_COMPLETION_TOKENS))
        worst = sum(
            (
                ceil_usd(
                    worst_case_cost(
                        self.info(m), bound, max_tokens, searches=int(m.endswith(":online"))
                    )
                )
                * attempts
                for t in self.path(tier)
                for m in self.plans[t].models
            ),
            Decimal(0),
        )
        return quantize_usd(expected), worst


def _store_state(
    spec: JobSpec, store: ResultStore, today: date, *, retry_failed: bool
) -> tuple[Decimal, set[str]]:
    scope = spec.name if spec.budget.scope == "job" else None
    spent = store.spent_on(today, job_name=scope)
    statuses = {RecordStatus.DONE}
    if not retry_failed:
        statuses |= {RecordStatus.FAILED, RecordStatus.INVALID}
    return spent, set(store.final_keys(spec.name, statuses=statuses))


def offline_catalog(db_path: Path) -> Catalog:
    """The catalogue a run cached in this database, else the one shipped in the package."""
    cached = ResultStore(db_path).load_catalog() if db_path.exists() else None
    if cached is None:
        return Catalog.shipped()
    return Catalog(cached[0], source="cache", fetched_at=cached[1].isoformat())


def quote(
    spec: JobSpec,
    *,
    db_path: Path,
    today: date,
    budget_usd: Decimal | None = None,
    limit: int | None = None,
    retry_failed: bool = False,
) -> Quote:
    """Price the job as `run` would send it today, without calls or writes."""
    spent, final = Decimal(0), set[str]()
    if db_path.exists():
        store = ResultStore(db_path)
        spent, final = _store_state(spec, store, today, retry_failed=retry_failed)
    catalog = offline_catalog(db_path)
    plans, notes = check_plans(resolve_tiers(spec, catalog), catalog)
    pricer = _Pricer(spec, catalog, plans)
    cap = budget_usd if budget_usd is not None else spec.budget.daily_usd
    q = Quote(spec.name, cap, spent, {t: TierQuote(t, p.models) for t, p in plans.items()})
    q.catalog = f"{catalog.source} ({catalog.fetched_at})"
    q.notes = notes
    params = request_params(spec.request)
    for rec in read_records(spec.input, id_field=spec.id_field):
        if limit is not None and q.records >= limit:
            break
        if rec.key in final:
            q.skipped += 1
            continue
        item = prepare_record(spec, params, rec)
        if isinstance(item, str):
            q.invalid += 1
            continue
        expected, worst = pricer.price(item.tier, item.messages)
        tq = q.tiers[item.tier]
        tq.records += 1
        tq.expected_usd += expected
        tq.worst_usd += worst
    return q


def describe_plan(spec: JobSpec, db_path: Path) -> list[str]:
    """`batchroute validate`: the resolved plan, with warnings; SpecError if it cannot run."""
    catalog = offline_catalog(db_path)
    plans, warnings = check_plans(resolve_tiers(spec, catalog), catalog)
    lines = [
        f"job {spec.name}: {spec.input} → {db_path}",
        f"budget ${spec.budget.daily_usd}/day (scope {spec.budget.scope}); "
        f"max_tokens {spec.request.max_tokens}; concurrency {spec.limits.concurrency}",
        f"prices: {catalog.source} catalogue ({catalog.fetched_at})",
    ]
    lines += [f"tier {name}: " + " → ".join(plan.models) for name, plan in plans.items()]
    table = {t: spec.tier_for_task(t) for t in TASK_TYPES}
    lines.append("routing: " + ", ".join(f"{k}→{v}" for k, v in table.items()))
    return lines + [f"warning: {w}" for w in warnings]


def render_quote(q: Quote) -> str:
    """The quote as a small aligned table."""
    lines = [f"dry run for job {q.job_name} (prices: {q.catalog})"]
    lines.append(f"{'tier':<10} {'records':>8} {'expected $':>14} {'worst case $':>14}  models")
    for t in q.tiers.values():
        lines.append(
            f"{t.tier:<10} {t.records:>8} {t.expected_usd:>14.6f} {t.worst_usd:>14.6f}  "
            + ", ".join(t.models)
        )
    lines.append(
        f"{'total':<10} {q.records:>8} {q.expected_usd:>14.6f} {q.worst_usd:>14.6f}"
        f"  ({q.invalid} invalid, {q.skipped} already final)"
    )
    d = q.as_dict()
    lines.append(
        f"today: ${q.spent_today_usd} spent of ${q.cap_usd}, ${q.remaining_usd} left: "
        f"expected {'fits' if d['fits_expected'] else 'does NOT fit'}, worst case "
        f"{'fits' if d['fits_worst'] else 'does not fit (the cap will stop the run)'}"
    )
    return "\n".join(lines)
