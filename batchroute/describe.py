"""What `batchroute validate` prints: the job's resolved plan, in words (which tiers and models,
the routing table, the classifier and cost dial, the experiment, what escalates)."""

from __future__ import annotations

from pathlib import Path

from batchroute.catalog import Catalog
from batchroute.plan import Overrides, build_plan, policy_of, strong_tiers
from batchroute.runner.batching import batch_model
from batchroute.spec import JobSpec
from batchroute.split import arm_name
from batchroute.types import TASK_TYPES, ResumeState
from batchroute.usd import usd


def describe_plan(spec: JobSpec, db_path: Path, catalog: Catalog) -> list[str]:
    """`batchroute validate`: the resolved plan priced with `catalog` (the database's cached
    one, else the shipped one), with warnings; SpecError if it cannot run."""
    plan = build_plan(spec, catalog, ResumeState(), Overrides())
    plans, warnings = plan.tiers, plan.warnings
    lines = [
        f"job {spec.name}: {spec.input} → {db_path}",
        f"budget {usd(spec.budget.daily_usd)}/day (scope {spec.budget.scope}); "
        f"max_tokens {spec.request.max_tokens}; concurrency {spec.limits.concurrency}",
        f"prices: {catalog.source} catalogue ({catalog.fetched_at})",
    ]
    lines += [f"tier {name}: " + " → ".join(plan.models) + _batch_note(spec, name, catalog)
              for name, plan in plans.items()]  # fmt: skip
    table = {t: spec.tier_for_task(t) for t in TASK_TYPES}
    lines.append("routing: " + ", ".join(f"{k}→{v}" for k, v in table.items()))
    lines += _classifier_lines(spec)
    lines.append(_escalation_line(spec))
    return lines + [f"warning: {w}" for w in warnings]


def _classifier_lines(spec: JobSpec) -> list[str]:
    """Which classifier routes, what the cost dial and the experiment do (issue 12)."""
    if spec.task:
        lines = [
            f"classifier: none (task {spec.task} given by the job decides alone: every record "
            f"goes to {spec.tier_for_task(spec.task)}; the classifier and the cost dial are unused)"
        ]
    else:
        lines = [
            f"classifier: {spec.classifier}"
            + ("" if "classifier" in spec.model_fields_set else " (the default)")
        ]
        if spec.task_field:
            lines.append(
                f"task_field {spec.task_field}: a record whose {spec.task_field} is a known task "
                "type goes by the routing table alone; the classifier routes the others"
            )
        policy = policy_of(spec)
        if policy is not None:
            given = "" if spec.routing_policy is not None else " (the default)"
            lines.append(
                "cost dial: "
                + ", ".join(f"{k} {v}" for k, v in policy.items())
                + given
                + f"; strong tiers {', '.join(strong_tiers(spec))}; the learned scores "
                "are calibrated on the whole input before each run (see run --dry-run)"
            )
        else:
            lines.append("cost dial: none (the routing table and complexity decide)")
    x = spec.experiment
    if x is not None:
        names = list(spec.tiers)
        end = names[-1] if x.tier_shift > 0 else names[0]
        lines.append(
            f"experiment: {x.share:.1%} of records (seed {x.seed}) move {x.tier_shift:+d} "
            f"tier(s), no further than {end}; results.arm is control or "
            f"{arm_name(x.tier_shift)}"
        )
    return lines


def _batch_note(spec: JobSpec, tier: str, catalog: Catalog) -> str:
    """A `batch: true` tier's note: the id its batches go to, the wait, exit 7 (issue 14)."""
    if not spec.tiers[tier].batch:
        return ""
    model = batch_model(spec.tiers[tier].models[0], catalog.models)
    return f" (batch: as {model}, results within 24 h; exit 7 while a batch is out)"


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
