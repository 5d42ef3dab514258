"""What the dry run's worst case counts for a job: the terms (`--json`'s `worst_case_counts`)
and the same in one line of words. Split out of `quote.py` (at its 400-line limit).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from batchroute.budget import BYOK_FEE
from batchroute.plan import RunPlan


def worst_terms(plan: RunPlan) -> dict[str, Any]:
    """What `RunPlan.worst_record` counts for this job, for the quote to say (and --json)."""
    spec = plan.spec
    return {
        "max_attempts": spec.limits.max_attempts,
        "max_escalations": min(spec.limits.max_escalations, len(plan.tiers) - 1),
        "max_tokens": spec.request.max_tokens,
        "reasoning_tokens": plan.terms.completion_tokens - spec.request.max_tokens,
        "cache_write": plan.terms.cache_ttl,
        "byok_fee": str(BYOK_FEE),
        "web_search": any(plan.searches(m) for t in plan.tiers.values() for m in t.models),
        "native_fallback_tiers": [n for n, t in plan.tiers.items() if t.native_fallback],
        "batch_tiers": [n for n in plan.tiers if spec.tiers[n].batch],
    }


def worst_line(terms: dict[str, Any]) -> str:
    """The worst case in one line: every call the run may make for a record, billed in full."""
    climbs = terms["max_escalations"]
    up = f" and of up to {climbs} tier(s) above it (escalation)" if climbs else ""
    native = terms["native_fallback_tiers"]
    return (
        f"every record billed in full on every call the run may make for it: "
        f"{terms['max_attempts']} tries (limits.max_attempts) on each model of its tier's "
        f"chain{up}, each answer {terms['max_tokens']} tokens (max_tokens)"
        + (
            f" plus {terms['reasoning_tokens']} reasoning tokens (reasoning.max_tokens)"
            if terms.get("reasoning_tokens")
            else ""
        )
        + " at the model's dearest completion price (reasoning included), the prompt at 1 "
        "token per byte at the dearest prompt price"
        + (
            f" or a {terms['cache_write']} cache write's (cache_control)"
            if terms.get("cache_write")
            else ""
        )
        + ", request fees"
        + (
            ", a web search per call (its injected results: the model's whole context at the "
            "prompt price)"
            if terms["web_search"]
            else ""
        )
        + f" and the {Decimal(terms['byok_fee']) * 100:.0f} % BYOK fee"
        + (
            f"; in {', '.join(native)} (native_fallback) each call at the dearest model that "
            "may serve it"
            if native
            else ""
        )
        + (
            f"; in {', '.join(terms['batch_tiers'])} (batch) two batch items first (an expired "
            "batch's items are resubmitted once), each at the submitted id's listed price"
            if terms.get("batch_tiers")
            else ""
        )
    )
