"""The run plan: everything a run decides before its first call, decided once, pure.

Built from the spec, the catalogue, the store's resume state and the run's overrides: the tier
chains, the cap and its scope, the escalation paths, each call's worst case, and whether each
record is sent (`Intake`, asking a `KeyLookup` what the store knew of its key). `run` and
`run --dry-run` both use it, so a quote matches the run by construction. It composes the pure
stages (prompt, classifier, router, budget arithmetic): no I/O, no clock, no HTTP or DuckDB.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from batchroute import classifier, learned
from batchroute.budget import (
    CallTerms,
    call_terms,
    prompt_token_bound,
    quantize_usd,
    typical_prompt_tokens,
)
from batchroute.catalog import Catalog, ModelInfo
from batchroute.errors import InputError, SpecError
from batchroute.prompt import fingerprint, line_salt, render_messages, request_params
from batchroute.router import TierPlan, check_plans, choose_tier, resolve_tiers
from batchroute.spec import JobSpec
from batchroute.split import CONTROL, DialSample, arm_name, in_experiment, shifted
from batchroute.thresholds import DEFAULT_POLICY, Dial, Point, calibrate, for_tiers
from batchroute.types import (
    TASK_TYPES,
    Classification,
    KeyLookup,
    Record,
    RecordStatus,
    ResumeState,
)

TYPICAL_COMPLETION_TOKENS = 256  # a typical answer, for expected (not worst-case) costs


@dataclass(frozen=True, slots=True)
class Overrides:
    """What this invocation changes about the job (the CLI's --budget, --retry-failed, ...)."""

    budget_usd: Decimal | None = None
    retry_failed: bool = False
    rerun_changed: bool = False
    limit: int | None = None

    @property
    def final_statuses(self) -> frozenset[RecordStatus]:
        """The statuses that keep a record from being sent again."""
        if self.retry_failed:
            return frozenset({RecordStatus.DONE})
        return frozenset({RecordStatus.DONE, RecordStatus.FAILED, RecordStatus.INVALID})


def daily_cap(spec: JobSpec, overrides: Overrides) -> Decimal:
    """Today's cap: --budget, else the job's `budget.daily_usd`."""
    o = overrides.budget_usd
    return o if o is not None else spec.budget.daily_usd


def budget_scope(spec: JobSpec) -> str | None:
    """The job whose spend counts against the cap; None: every job in the database."""
    return spec.name if spec.budget.scope == "job" else None


@dataclass(slots=True)
class WorkItem:
    """A record ready to send: its messages, fingerprint, classification and tier."""

    record: Record
    messages: list[dict[str, str]]
    fp: str
    cls: Classification
    tier: str
    explicit: bool
    prompt_bound: int  # upper bound on prompt tokens, computed once
    arm: str | None = None  # the experiment arm (results.arm); None: no experiment


class Admit(StrEnum):
    """What a run does with one input record."""

    SEND = "send"
    FINAL = "final"  # already done (or failed/invalid, without --retry-failed): skipped
    INVALID = "invalid"  # cannot be rendered: an `invalid` row, never sent
    DUPLICATE = "duplicate"  # its key came earlier in this input: the first one counts


# Not frozen (issue 11): one is built per record or call on the hot path, and a frozen
# dataclass's __init__ costs ~5x a plain one's (2.6 vs 0.5 µs for 8 fields). Treat as read-only.
@dataclass(slots=True)
class Admission:
    """The resume decision for one record."""

    admit: Admit
    item: WorkItem | None = None  # with SEND
    reason: str = ""  # with INVALID: why
    stale: bool = False  # final, but its prompt changed since (sent with --rerun-changed)
    failed_before: bool = False  # an earlier run's failure that is still in the input


_DUPLICATE = Admission(Admit.DUPLICATE)
_FINAL = {
    (stale, failed): Admission(Admit.FINAL, stale=stale, failed_before=failed)
    for stale in (False, True)
    for failed in (False, True)
}  # the skip path builds no Admission: a resume mostly skips


def render(spec: JobSpec, rec: Record) -> list[dict[str, str]] | str:
    """The record's messages, or why it is invalid."""
    if rec.fields is None:
        return rec.error or "invalid line"
    try:
        return render_messages(spec.prompt, rec.fields)
    except InputError as exc:
        return exc.reason


@functools.cache
def _given(task: str, reason: str) -> Classification:
    """A given task's verdict: one frozen object per (task, source), not one a record (issue 11)."""
    return Classification(task, "medium", reason)


def classification(
    spec: JobSpec, rec: Record, messages: list[dict[str, str]]
) -> tuple[Classification, bool]:
    """The record's task, given (True) by its `task_field` or the job's `task`, which decide
    alone; else (False) the job's classifier's verdict on the rendered prompt."""
    given = (rec.fields or {}).get(spec.task_field) if spec.task_field else None
    if given in TASK_TYPES:
        return _given(str(given), "task_field"), True
    if spec.task:
        return _given(spec.task, "job.task"), True
    system = messages[0]["content"] if len(messages) > 1 else ""
    classify = learned.classify if spec.classifier == "learned" else classifier.classify
    return classify(messages[-1]["content"], system=system), False


def classify_item(
    spec: JobSpec,
    params: Mapping[str, Any],
    rec: Record,
    messages: list[dict[str, str]],
    dial: Dial | None = None,
) -> WorkItem:
    """Classify and route a rendered record: a given task by the routing table; per-tier
    predictions with the cost dial by the calibrated `dial` over the job's tiers (cheapest
    first); else the classifier's task and complexity. Then the experiment's arm, if any."""
    cls, explicit = classification(spec, rec, messages)
    point = None if explicit or dial is None else dial_point(cls, messages, len(spec.tiers))
    if dial is not None and point is not None:
        tier = list(spec.tiers)[dial.tier(point.quality, point.factor, point.tokens)]
    else:
        tier = choose_tier(cls, spec, explicit_task=explicit)
    arm = None
    if (x := spec.experiment) is not None:
        names = list(spec.tiers)
        arm = CONTROL
        if in_experiment(x.seed, rec.key, x.share):
            arm = arm_name(x.tier_shift)
            tier = names[shifted(names.index(tier), x.tier_shift, len(names))]
    bound = prompt_token_bound([m["content"] for m in messages])  # a list: no generator frame
    return WorkItem(rec, messages, fingerprint(messages, params), cls, tier, explicit, bound, arm)


def dial_point(cls: Classification, messages: list[dict[str, str]], n_tiers: int) -> Point | None:
    """What the cost dial routes a record on: its per-level predictions mapped onto the job's
    tiers (`thresholds.tier_levels`) and its prompt tokens; None for a classifier without."""
    if cls.tier_quality is None or cls.tier_cost is None:
        return None
    return Point(
        for_tiers(cls.tier_quality, n_tiers),
        for_tiers(cls.tier_cost, n_tiers),
        typical_prompt_tokens(messages),
    )


def strong_tiers(spec: JobSpec) -> list[str]:
    """The tiers the dial's `strong_share` counts: the upper half (thresholds' default)."""
    names = list(spec.tiers)
    return names[max(len(names) // 2, 1) :]


def policy_of(spec: JobSpec) -> dict[str, float] | None:
    """The cost dial that applies: the job's, else the default one for a classifier that
    scores; None (the routing table decides) for the heuristic or a job that gives the task."""
    if spec.task or spec.classifier != "learned":
        return None
    if spec.routing_policy is not None:
        return spec.routing_policy.model_dump(exclude_none=True)
    return dict(DEFAULT_POLICY)


@dataclass(frozen=True)
class RunPlan:
    """What a run will do; build it with `build_plan`."""

    spec: JobSpec
    catalog: Catalog
    tiers: Mapping[str, TierPlan]
    overrides: Overrides
    resume: ResumeState
    params: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    dial: Dial | None = None  # the calibrated cost dial, from `calibrated`
    scored: int = 0  # records the dial was calibrated on (a sample beyond split.SAMPLE_MAX)
    _dearest: ModelInfo = field(init=False, repr=False)
    terms: CallTerms = field(init=False, repr=False)  # what the request adds to each call

    def __post_init__(self) -> None:
        object.__setattr__(self, "_dearest", self.catalog.dearest())
        object.__setattr__(self, "terms", call_terms(self.params))

    # ----------------------------------------------------------------- budget
    @property
    def cap(self) -> Decimal:
        """Today's cap: --budget, else the job's `budget.daily_usd`."""
        return daily_cap(self.spec, self.overrides)

    @property
    def scope(self) -> str | None:
        return budget_scope(self.spec)

    def info(self, model: str) -> ModelInfo:
        """The model's prices; one missing from the catalogue is priced as the dearest known."""
        return self.catalog.get(model) or self._dearest

    def served_by(self, tier: str, model: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A call's OpenRouter routing fields, and the models that may serve it."""
        extra = self.tiers[tier].extra_body(model)
        return extra, tuple(extra.get("models") or (model,))

    def searches(self, model: str) -> int:
        """Web searches a call may be billed for: `:online` runs the web plugin once."""
        return self.terms.searches(model)

    def worst_call(self, served_by: tuple[str, ...], prompt_bound: int) -> Decimal:
        """The reservation of one call: its worst case over every model that may serve it
        (`budget.CallTerms.worst`: schema, cache writes, reasoning budget, priority tier)."""
        return max(self.terms.worst(self.info(m), m, prompt_bound) for m in served_by)

    def expected_call(self, tier: str, prompt_tokens: int) -> Decimal:
        """What a call to `tier` typically costs: a typical answer (`TYPICAL_COMPLETION_TOKENS`,
        capped by max_tokens) from the tier's first model. The dry run's expected cost and the
        cost dial's tier costs both use it."""
        out = min(self.spec.request.max_tokens, TYPICAL_COMPLETION_TOKENS)
        return quantize_usd(self.info(self.tiers[tier].models[0]).cost(prompt_tokens, out))

    def calibrated(self, records: Iterable[Record]) -> RunPlan:
        """The plan with the cost dial calibrated on `records` (the whole input, sampled by
        key beyond `split.SAMPLE_MAX`: λ, so each record's tier, does not depend on how far
        an earlier run got). One streamed pass in fixed memory; the plan itself when no dial
        applies."""
        policy = policy_of(self.spec)
        if policy is None:
            return self
        sample: DialSample[Point] = DialSample()
        n = len(self.tiers)
        for rec in records:
            messages = render(self.spec, rec)
            if isinstance(messages, str):
                continue
            cls, explicit = classification(self.spec, rec, messages)
            point = None if explicit else dial_point(cls, messages, n)
            if point is None:
                continue  # a given task goes by the routing table: not the dial's to split
            sample.add(rec.key, point)
        if sample.count == 0:
            return self
        # each tier's expected call (a typical answer), split into per call + per prompt token
        per_call = [float(self.expected_call(t, 0)) for t in self.tiers]
        per_token = [(float(self.expected_call(t, 10**6)) - c) / 1e6 for t, c in
                     zip(self.tiers, per_call, strict=True)]  # fmt: skip
        try:
            dial = calibrate(
                sample.items(),
                per_call,
                per_token,
                strong_share=policy.get("strong_share"),
                max_cost_ratio=policy.get("max_cost_ratio"),
            )
        except ValueError as exc:
            path = str(self.spec.path) if self.spec.path else None
            raise SpecError(str(exc), path=path, key="routing_policy") from None
        return replace(self, dial=dial, scored=sample.count)

    # ---------------------------------------------------------------- routing
    def next_tier(self, tier: str) -> str | None:
        """Where a record climbs from `tier` when it escalates."""
        return self.spec.next_tier(tier)

    def escalation_path(self, tier: str) -> tuple[str, ...]:
        """The tier and every tier a record starting there may escalate to."""
        path = [tier]
        for _ in range(self.spec.limits.max_escalations):
            nxt = self.next_tier(path[-1])
            if nxt is None:
                break
            path.append(nxt)
        return tuple(path)

    def worst_record(self, item: WorkItem) -> Decimal:
        """The most a record can cost: every call the runner may make for it (each model of
        each tier on its escalation path, `max_attempts` times) billed at its reservation."""
        attempts = self.spec.limits.max_attempts
        return sum(
            (
                self.worst_call(self.served_by(t, m)[1], item.prompt_bound) * attempts
                for t in self.escalation_path(item.tier)
                for m in self.tiers[t].models
            ),
            Decimal(0),
        )

    # ----------------------------------------------------------------- intake
    @property
    def line_salt(self) -> bytes:
        """The salt of the input lines' fingerprints (`reader.read_records(salt=...)`)."""
        return line_salt(self.spec.prompt, self.params, self.spec.id_field)

    def intake(self, lookup: KeyLookup) -> Intake:
        """A fresh pass over the input, with a fresh `lookup` (one per pass)."""
        return Intake(self, lookup)


class Intake:
    """One pass over the input: the resume decision for each record, in input order.

    What the store knew of each key (final, its fingerprint, an earlier failure, a key twice in
    this input: `1` and `"1"` too, the first one is the record, the second must not pay again
    or overwrite it) comes from the `KeyLookup`, asked once per record in input order; the
    intake itself counts only the records admitted (`--limit`).
    """

    def __init__(self, plan: RunPlan, lookup: KeyLookup) -> None:
        self._plan = plan
        self._lookup = lookup
        self.taken = 0

    @property
    def full(self) -> bool:
        """`--limit` records were admitted: read no further."""
        limit = self._plan.overrides.limit
        return limit is not None and self.taken >= limit

    def admit(self, rec: Record) -> Admission:
        """Skip, reject or send `rec` (resume filter first: it is cheap)."""
        known = self._lookup.next(rec.key)
        if known.duplicate:
            return _DUPLICATE
        plan = self._plan
        failed_before = known.failed_before
        if known.final and known.line_fp is not None and known.line_fp == rec.line_fp:
            return _FINAL[False, failed_before]  # the same line under the same prompt: not stale
        messages = render(plan.spec, rec)
        if isinstance(messages, str):
            kind = Admit.FINAL if known.final else Admit.INVALID
            return Admission(kind, reason=messages, failed_before=failed_before)
        stale = False
        if known.final:
            old = known.fp  # None: done before fingerprints were kept
            stale = old is not None and old != fingerprint(messages, plan.params)
            if not (stale and plan.overrides.rerun_changed):
                return _FINAL[stale, failed_before]
        self.taken += 1
        item = classify_item(plan.spec, plan.params, rec, messages, plan.dial)
        return Admission(Admit.SEND, item, stale=stale, failed_before=failed_before)


def build_plan(
    spec: JobSpec,
    catalog: Catalog,
    resume: ResumeState,
    overrides: Overrides,
    *,
    live: bool = False,
) -> RunPlan:
    """The plan for this run; a SpecError if a tier cannot run (see `router.check_plans`)."""
    tiers, warnings = check_plans(resolve_tiers(spec, catalog), catalog, live=live)
    return RunPlan(
        spec,
        catalog,
        tiers,
        overrides,
        resume,
        request_params(spec.request),
        tuple(warnings),
    )
