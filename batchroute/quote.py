"""Dry run: price the run's plan (`batchroute.plan`) record by record, without a single call.

It sends nothing and writes nothing. The records, tiers and resume decisions are the plan's,
the same the run uses; prices come from the store's cached catalogue, else the shipped one.

Expected cost assumes a typical answer (`TYPICAL_COMPLETION_TOKENS`, capped by max_tokens) from
the first model of the record's tier and a prompt of about 4 bytes per token. The worst case
follows what the runner may do: every model of the record's chain and of each tier it may
escalate to returns an answer that is billed in full (prompt bound + max_tokens) and then
rejected, on every one of its `max_attempts` tries (an answer cut off in transit is billed,
then retried). Errors before any token are unbilled (OpenRouter's zero-completion insurance).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from batchroute.budget import typical_prompt_tokens
from batchroute.catalog import Catalog
from batchroute.journal import Journal, read_journal
from batchroute.lookup import MemoryLookup
from batchroute.plan import (
    TYPICAL_COMPLETION_TOKENS,
    Admit,
    Overrides,
    RunPlan,
    WorkItem,
    budget_scope,
    build_plan,
    policy_of,
    strong_tiers,
)
from batchroute.prompt import line_salt, request_params
from batchroute.reader import read_records
from batchroute.runner.batching import batch_forms, billed_by_models, expected_record
from batchroute.runner.cost import Pricer, learn_since, learnt_note
from batchroute.runner.recover import Replayed, journaled
from batchroute.runner.resume import InputScan, Skipped, open_lookup, pending
from batchroute.spec import JobSpec
from batchroute.store import ResultStore
from batchroute.types import KeyLookup, ResumeState
from batchroute.usd import amount, exact, usd
from batchroute.worst import worst_line, worst_terms


@dataclass
class TierQuote:
    tier: str
    models: tuple[str, ...]
    records: int = 0
    expected_usd: Decimal = Decimal(0)
    worst_usd: Decimal = Decimal(0)
    expected_list_usd: Decimal = Decimal(0)  # the expected cost at list prices (no ratio)
    never_fit: int = 0  # records no call of whose chain fits the whole cap: the run fails them
    least_call: Decimal | None = None  # the cheapest such record's cheapest call (worst case)


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
    learnt: str | None = None  # the learnt cost ratios the worst case counts (`learnt_note`)
    expected_includes: str = ""  # what the expected figure assumes, in one line
    worst_includes: str = ""  # what the worst case counts, in one line (`worst_terms`)
    worst_terms: dict[str, Any] = field(default_factory=dict)
    dial: dict[str, Any] | None = None  # the cost dial: its policy and λ (issue 12)
    arms: Counter[str] = field(default_factory=Counter)  # records sent per experiment arm

    @property
    def records(self) -> int:
        return sum(t.records for t in self.tiers.values())

    @property
    def never_fit(self) -> int:
        return sum(t.never_fit for t in self.tiers.values())

    @property
    def expected_usd(self) -> Decimal:
        return sum((t.expected_usd for t in self.tiers.values()), Decimal(0))

    @property
    def worst_usd(self) -> Decimal:
        return sum((t.worst_usd for t in self.tiers.values()), Decimal(0))

    @property
    def expected_list_usd(self) -> Decimal:
        return sum((t.expected_list_usd for t in self.tiers.values()), Decimal(0))

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
                    "expected_usd": exact(t.expected_usd),
                    "expected_list_usd": exact(t.expected_list_usd),
                    "worst_usd": exact(t.worst_usd),
                    "never_fit": t.never_fit,
                }
                for t in self.tiers.values()
            ],
            "expected_usd": exact(self.expected_usd),
            "expected_list_usd": exact(self.expected_list_usd),
            "worst_usd": exact(self.worst_usd),
            "cap_usd": exact(self.cap_usd),
            "spent_today_usd": exact(self.spent_today_usd),
            "remaining_usd": exact(self.remaining_usd),
            "fits_expected": self.expected_usd <= self.remaining_usd,
            "fits_worst": self.worst_usd <= self.remaining_usd,
            "never_fit": self.never_fit,
            "expected_includes": self.expected_includes,
            "worst_case_includes": self.worst_includes,
            "worst_case_counts": self.worst_terms,
            "catalog": self.catalog,
            "notes": self.notes,
            "routing": self.dial,
            "arms": dict(sorted(self.arms.items())),
        }


def _dial(
    plan: RunPlan, tiers: dict[str, TierQuote], sent_usd: Decimal, top_usd: Decimal
) -> dict[str, Any] | None:
    """The cost dial as the dry run shows it: the policy, λ, the strong share reached,
    and the expected cost (`sent_usd`) as a fraction of the records sent all on the top tier
    (`top_usd`)."""
    policy = policy_of(plan.spec)
    if policy is None:
        return None
    names = strong_tiers(plan.spec)
    sent = sum(t.records for t in tiers.values())
    strong = sum(tiers[n].records for n in names)
    return {
        "classifier": plan.spec.classifier,
        "policy": policy,
        "lambda": plan.dial.lam if plan.dial is not None else None,
        # the dial's own estimate, with the model's per-prompt cost factors (answer lengths)
        "dial_cost_ratio": round(plan.dial.cost_ratio, 4) if plan.dial is not None else None,
        "scored": plan.scored,
        "strong_tiers": names,
        "strong_share": round(strong / sent, 4) if sent else None,
        "cost_ratio": round(float(sent_usd / top_usd), 4) if top_usd > 0 else None,
    }


def _lam(lam: float | None) -> str:
    """λ (quality per USD) for people: 4 significant digits, "none" without a dial."""
    return "none" if lam is None else f"{lam:.4g}"


def offline_catalog(db_path: Path) -> Catalog:
    """The catalogue a run cached in this database, else the one shipped in the package."""
    cached = ResultStore(db_path, read_only=True).load_catalog() if db_path.exists() else None
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
    scan: InputScan | None = None
    replayed: Replayed | None = None
    with contextlib.ExitStack() as stack:
        if db_path.exists() and db_path.stat().st_size == 0:
            # The place a job's first run keeps for its new database, left by a start killed
            # before its writer process made it (runner/start.py): only the journal holds rows.
            rows = read_journal(*Journal(db_path).files())
            statuses = overrides.final_statuses
            replayed = Replayed(*rows, job_name=spec.name, final_statuses=statuses)
            resume = ResumeState(spent=replayed.spent(today, budget_scope(spec)))
            resume = replayed.learnt(learn_since(today), resume)  # as the run will seed
        elif db_path.exists():
            store = ResultStore(db_path, read_only=True)
            statuses = overrides.final_statuses
            resume = store.resume_state(
                spec.name, final_statuses=statuses, day=today, scope=budget_scope(spec),
                learn_since=learn_since(today),
            )  # fmt: skip
            # A killed run's journal, which the run replays before anything else: its final
            # records and its spend count as the run will find them.
            replayed = Replayed(*journaled(store), job_name=spec.name, final_statuses=statuses)
            spent = resume.spent + replayed.spent(today, budget_scope(spec))
            resume = replayed.learnt(learn_since(today), resume)  # its ratios too (gaps5)
            resume = dataclasses.replace(resume, spent=spent)
            salt = line_salt(spec.prompt, request_params(spec.request), spec.id_field)
            scan = open_lookup(
                store, spec.name, spec.input, id_field=spec.id_field, salt=salt,
                final_statuses=statuses,
            )  # fmt: skip
            stack.callback(scan.close)
        return _quote(spec, db_path, resume, overrides, scan, replayed)


def _quote(
    spec: JobSpec,
    db_path: Path,
    resume: ResumeState,
    overrides: Overrides,
    scan: InputScan | None,
    replayed: Replayed | None,
) -> Quote:
    catalog = offline_catalog(db_path)
    plan = build_plan(spec, catalog, resume, overrides)
    plan = plan.calibrated(read_records(spec.input, id_field=spec.id_field))
    q = Quote(
        spec.name,
        plan.cap,
        resume.spent,
        {t: TierQuote(t, p.models) for t, p in plan.tiers.items()},
    )
    q.catalog = f"{catalog.source} ({catalog.fetched_at})"
    q.learnt = learnt_note(resume)
    q.notes = [*plan.warnings, *filter(None, [q.learnt])]
    pricer = Pricer(plan)  # the run's reservations: learnt ratios in force (runner/cost.py)
    billed_by = {t: billed_by_models(plan, t) for t in plan.tiers}
    forms = {t: batch_forms(plan, t) for t in plan.tiers if spec.tiers[t].batch}
    q.worst_terms = worst_terms(plan)
    q.worst_includes = worst_line(q.worst_terms)
    q.expected_includes = (
        f"one answer of {min(spec.request.max_tokens, TYPICAL_COMPLETION_TOKENS)} tokens per "
        "record from the first model of its tier, the prompt at ~4 bytes a token, no retry"
    )
    if any(spec.tiers[t].batch for t in plan.tiers):
        q.expected_includes += (
            "; batch tiers at the listed `:batch` price, else half the price (as batches are "
            "typically billed)"
        )
    if q.learnt:  # money4: it was at list prices while the worst case counted the ratios
        q.expected_includes += (
            "; x the learnt cost ratios in force, as the worst case (a ratio is measured "
            "against the worst case, so at least that)"
        )
    lookup: KeyLookup = scan.lookup if scan is not None else MemoryLookup()
    intake = plan.intake(replayed.lookup(lookup) if replayed is not None else lookup)
    top, top_usd = list(plan.tiers)[-1], Decimal(0)  # the dial's cost ratio is against it
    dial_usd = Decimal(0)
    salt = plan.line_salt
    records = (
        pending(scan, id_field=spec.id_field, salt=salt)
        if scan is not None  # a final, unchanged line is not even read again
        else read_records(spec.input, id_field=spec.id_field, salt=salt)
    )
    for rec in records:
        if intake.full:
            break
        if isinstance(rec, Skipped):
            q.skipped += rec.final
            q.duplicates += rec.repeats
            continue
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
            tokens = typical_prompt_tokens(a.item.messages)
            listed = expected_record(plan, a.item.tier, tokens)
            tq.expected_list_usd += listed
            tq.expected_usd += pricer.expected(listed, billed_by[a.item.tier])
            # The dial's ratio at the prices the dial calibrates with (synchronous ones).
            dial_usd += plan.expected_call(a.item.tier, tokens)
            top_usd += plan.expected_call(top, tokens)
            tq.worst_usd += pricer.worst_record(a.item)
            if spec.tiers[a.item.tier].batch:  # its batch item, resubmitted once (an expired
                # batch's item that ran, billed, may show no result line), then the sync chain
                tq.worst_usd += 2 * pricer.worst(a.item.prompt_bound, forms[a.item.tier])
            _count_never_fit(plan, a.item, tq)
            if a.item.arm is not None:
                q.arms[a.item.arm] += 1
    q.dial = _dial(plan, q.tiers, dial_usd, top_usd)
    return q


def _count_never_fit(plan: RunPlan, item: WorkItem, tq: TierQuote) -> None:
    """As the runner decides (`Budget.exceeds_cap` on each model of the chain): a record no
    call of which fits under the whole cap is failed at once, without a call (exceeds_daily_cap)."""
    least = min(
        plan.worst_call(plan.served_by(item.tier, m)[1], item.prompt_bound)
        for m in plan.tiers[item.tier].models
    )
    if least > plan.cap:
        tq.never_fit += 1
        tq.least_call = least if tq.least_call is None else min(tq.least_call, least)


def render_quote(q: Quote) -> str:
    """The quote as a small aligned table, with what each figure counts and whether it fits."""
    lines = [f"dry run for job {q.job_name} (prices: {q.catalog})"]
    lines.append(f"{'tier':<10} {'records':>8} {'expected $':>14} {'worst case $':>14}  models")
    for t in q.tiers.values():
        lines.append(
            f"{t.tier:<10} {t.records:>8} {amount(t.expected_usd):>14} {amount(t.worst_usd):>14}  "
            + ", ".join(t.models)
        )
    lines.append(
        f"{'total':<10} {q.records:>8} {amount(q.expected_usd):>14} {amount(q.worst_usd):>14}"
        f"  ({q.invalid} invalid, {q.skipped} already final"
        + (f", {q.duplicates} repeated ids" if q.duplicates else "")
        + (f", {q.stale} changed since (see --rerun-changed)" if q.stale else "")
        + ")"
    )
    if q.dial is not None:
        policy = ", ".join(f"{k} {v}" for k, v in q.dial["policy"].items())
        lam = q.dial["lambda"]
        share = q.dial["strong_share"]
        lines.append(
            f"cost dial ({policy}; {q.dial['classifier']} predictions of {q.dial['scored']} "
            f"records): λ {_lam(lam)}; " + ("no record to send" if share is None else f"{share:.1%}"
            + " of the records sent go to " + ", ".join(q.dial["strong_tiers"])
            + (" (the experiment's moves included)" if q.arms else ""))
        )  # fmt: skip
        ratio, asked = q.dial["cost_ratio"], q.dial["policy"].get("max_cost_ratio")
        if ratio is not None:
            lines[-1] += f"; expected cost {ratio:.1%} of all on the top tier"
            if (est := q.dial.get("dial_cost_ratio")) is not None:
                lines[-1] += f" ({est:.1%} with the model's answer-length factors)"
            met = q.dial.get("dial_cost_ratio") or ratio  # what the dial kept under its ratio
            if asked is not None and met > asked * 1.02:  # the dial meets it on the whole input
                lines[-1] += f" (above max_cost_ratio {asked}: the weak tiers alone cost more" + (
                    ", or the experiment moved records up)" if q.arms else ")"
                )
    if q.arms:
        lines.append("experiment: " + ", ".join(f"{a} {n}" for a, n in sorted(q.arms.items())))
    lines.append(f"expected: {q.expected_includes}")
    if q.expected_usd != q.expected_list_usd:
        lines[-1] += f" (at list prices: {usd(q.expected_list_usd)})"
    lines.append(f"worst case: {q.worst_includes}" + (f"; {q.learnt}" if q.learnt else ""))
    left = q.remaining_usd
    expected = (
        f"expected {usd(q.expected_usd)} fits"
        if q.expected_usd <= left
        else f"expected {usd(q.expected_usd)} does NOT fit: the cap will likely stop the run "
        "and leave the rest pending for tomorrow (exit 3)"
    )
    worst = (
        f"worst case {usd(q.worst_usd)} fits: the run cannot reach the cap"
        if q.worst_usd <= left
        else f"worst case {usd(q.worst_usd)} does not fit: only if that many calls "
        "failed and were paid would the cap stop the run (the rest stays pending, exit 3)"
    )
    lines.append(
        f"today: {usd(q.spent_today_usd)} spent of {usd(q.cap_usd)}, {usd(left)} left; "
        f"{expected}; {worst}"
    )
    for t in q.tiers.values():
        if t.never_fit and t.least_call is not None:
            lines.append(
                f"cannot be sent: {t.never_fit} record(s) of {t.tier}: the worst case of every "
                f"call (from {usd(t.least_call)}) exceeds the whole cap {usd(q.cap_usd)}; the run "
                "marks them failed (exceeds_daily_cap), not pending: raise the cap or lower "
                "max_tokens"
            )
    return "\n".join(lines)
