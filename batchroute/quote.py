"""Dry run: price the run's plan (`batchroute.plan`) record by record, without a single call.

It sends nothing and writes nothing. The records, tiers and resume decisions are the plan's,
the same the run uses; prices come from the store's cached catalogue, else the shipped one.

Expected cost assumes a typical answer (`TYPICAL_COMPLETION_TOKENS`, capped by max_tokens) from
the first model of the record's tier and a prompt of about 4 bytes per token. The worst case
follows what the runner may do: every model of the record's chain and of each tier it may
escalate to returns an answer that is billed in full (prompt bound + max_tokens) and then
rejected, on every one of its `max_attempts` tries: an answer cut off in transit (malformed
body, reset connection) is billed, its cost recovered via /generation, and then retried.
Errors before any token are unbilled (OpenRouter's zero-completion insurance).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from batchroute.budget import quantize_usd
from batchroute.catalog import Catalog
from batchroute.plan import (
    Admit,
    MemoryLookup,
    Overrides,
    RunPlan,
    WorkItem,
    budget_scope,
    build_plan,
)
from batchroute.reader import read_keys, read_records
from batchroute.spec import JobSpec
from batchroute.store import ResultStore
from batchroute.types import TASK_TYPES, KeyLookup, ResumeState

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
    duplicates: int = 0
    stale: int = 0  # already final but their prompt changed since (sent with --rerun-changed)
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
            "duplicates": self.duplicates,
            "stale": self.stale,
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


def _expected(plan: RunPlan, item: WorkItem) -> Decimal:
    """A typical answer from the first model of the record's tier, a prompt of ~4 bytes a
    token (the worst case is the plan's: what the run reserves, call by call)."""
    max_tokens = plan.spec.request.max_tokens
    typical_prompt = sum(len(m["content"].encode()) // 4 + 4 for m in item.messages)
    first = plan.info(plan.tiers[item.tier].models[0])
    return quantize_usd(first.cost(typical_prompt, min(max_tokens, TYPICAL_COMPLETION_TOKENS)))


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
    rerun_changed: bool = False,
) -> Quote:
    """Price the job as `run` would send it today, without calls or writes: the same plan,
    the same resume decisions; only the catalogue is the cached or shipped one (no /models)."""
    overrides = Overrides(budget_usd, retry_failed, rerun_changed, limit)
    resume = ResumeState()
    lookup: KeyLookup = MemoryLookup()
    with contextlib.ExitStack() as stack:
        if db_path.exists():
            store = ResultStore(db_path)
            statuses = overrides.final_statuses
            resume = store.resume_state(
                spec.name, final_statuses=statuses, day=today, scope=budget_scope(spec)
            )
            keys = read_keys(spec.input, id_field=spec.id_field)
            source = str(spec.input)
            lookup = stack.enter_context(
                store.resume_lookup(spec.name, keys, final_statuses=statuses, source=source)
            )
        return _quote(spec, db_path, resume, overrides, lookup)


def _quote(
    spec: JobSpec, db_path: Path, resume: ResumeState, overrides: Overrides, lookup: KeyLookup
) -> Quote:
    catalog = offline_catalog(db_path)
    plan = build_plan(spec, catalog, resume, overrides)
    q = Quote(
        spec.name,
        plan.cap,
        resume.spent,
        {t: TierQuote(t, p.models) for t, p in plan.tiers.items()},
    )
    q.catalog = f"{catalog.source} ({catalog.fetched_at})"
    q.notes = list(plan.warnings)
    intake = plan.intake(lookup)
    expect = getattr(lookup, "expect", None)  # a final line is then not even parsed
    records = read_records(spec.input, id_field=spec.id_field, salt=plan.line_salt, expect=expect)
    for rec in records:
        if intake.full:
            break
        a = intake.admit(rec)
        q.stale += a.stale
        if a.admit is Admit.DUPLICATE:
            q.duplicates += 1
        elif a.admit is Admit.FINAL:
            q.skipped += 1
        elif a.admit is Admit.INVALID:
            q.invalid += 1
        elif a.item is not None:
            tq = q.tiers[a.item.tier]
            tq.records += 1
            tq.expected_usd += _expected(plan, a.item)
            tq.worst_usd += plan.worst_record(a.item)
    return q


def describe_plan(spec: JobSpec, db_path: Path) -> list[str]:
    """`batchroute validate`: the resolved plan, with warnings; SpecError if it cannot run."""
    catalog = offline_catalog(db_path)
    plan = build_plan(spec, catalog, ResumeState(), Overrides())
    plans, warnings = plan.tiers, plan.warnings
    lines = [
        f"job {spec.name}: {spec.input} → {db_path}",
        f"budget ${spec.budget.daily_usd}/day (scope {spec.budget.scope}); "
        f"max_tokens {spec.request.max_tokens}; concurrency {spec.limits.concurrency}",
        f"prices: {catalog.source} catalogue ({catalog.fetched_at})",
    ]
    lines += [f"tier {name}: " + " → ".join(plan.models) for name, plan in plans.items()]
    table = {t: spec.tier_for_task(t) for t in TASK_TYPES}
    lines.append("routing: " + ", ".join(f"{k}→{v}" for k, v in table.items()))
    lines.append(_escalation_line(spec))
    return lines + [f"warning: {w}" for w in warnings]


def _escalation_line(spec: JobSpec) -> str:
    """Which failures climb to a dearer tier (the policy `runner.policy.decide` applies)."""
    climbs = spec.limits.max_escalations
    if climbs == 0 or len(spec.tiers) < 2:
        why = "limits.max_escalations is 0" if climbs == 0 else "only one tier"
        return f"escalation: never ({why})"
    up = f"up to {climbs} tier(s)"
    quality, unavailable = "quality" in spec.escalate_on, "unavailable" in spec.escalate_on
    if quality and unavailable:
        return (
            f"escalation: {up} on quality failures and when a chain is unavailable "
            "(escalate_on: unavailable; an outage pays for a dearer tier)"
        )
    if unavailable:
        return (
            f"escalation: {up} only when a chain is unavailable; an answer that fails a "
            "quality check is stored as it is (escalate_on has no 'quality')"
        )
    if quality:
        return (
            f"escalation: {up} on quality failures only; a chain that is unavailable leaves "
            "its records pending (escalate_on: [quality, unavailable] climbs instead)"
        )
    return "escalation: never (escalate_on is empty)"


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
        f"  ({q.invalid} invalid, {q.skipped} already final"
        + (f", {q.duplicates} repeated ids" if q.duplicates else "")
        + (f", {q.stale} changed since (see --rerun-changed)" if q.stale else "")
        + ")"
    )
    d = q.as_dict()
    lines.append(
        f"today: ${q.spent_today_usd} spent of ${q.cap_usd}, ${q.remaining_usd} left: "
        f"expected {'fits' if d['fits_expected'] else 'does NOT fit'}, worst case "
        f"{'fits' if d['fits_worst'] else 'does not fit (the cap will stop the run)'}"
    )
    return "\n".join(lines)
