"""Plain data shared by the pipeline stages. Leaf module: no I/O, imports only `errors`-free stdlib.

Statuses are `str` enums so they can be written to DuckDB as they are. Money is `Decimal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

TASK_TYPES: tuple[str, ...] = (
    "classification",
    "simple_qa",
    "translation",
    "summarization",
    "chat",
    "code_generation",
    "code_review",
    "analysis",
    "creative_writing",
    "deep_reasoning",
)
"""The ten task types the classifier and routing table know."""

COMPLEXITIES: tuple[str, ...] = ("low", "medium", "high", "very_high")

TIER_NAMES: tuple[str, ...] = ("budget", "mid", "standard", "premium")
"""Default tier names, cheapest to strongest."""

DEFAULT_ROUTING: dict[str, str] = {
    "classification": "budget",
    "simple_qa": "budget",
    "translation": "mid",
    "summarization": "mid",
    "chat": "mid",
    "code_generation": "standard",
    "code_review": "standard",
    "analysis": "standard",
    "creative_writing": "standard",
    "deep_reasoning": "premium",
}
"""The classic task → tier table (design §2)."""

DEFAULT_COMPLEXITY_ROUTING: dict[str, str] = {
    "low": "budget",
    "medium": "mid",
    "high": "standard",
    "very_high": "premium",
}


class RecordStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    INVALID = "invalid"
    PENDING = "pending"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    BUDGET_EXHAUSTED = "budget_exhausted"
    UNAVAILABLE = "unavailable"  # stopped early: the provider was unreachable or failing
    FAILED = "failed"


class AttemptOutcome(StrEnum):
    """What the runner decided after one call."""

    OK = "ok"
    RETRY = "retry"  # same model again after a backoff
    FALLBACK = "fallback"  # next model of the tier's chain
    ESCALATE = "escalate"  # first model of the next tier
    FAILED = "failed"  # nothing left to try: the record fails
    FATAL = "fatal"  # the whole run stops (401, 402)
    DEFERRED = "deferred"  # the chain is unavailable: the record waits for the next run
    IN_FLIGHT = "in_flight"  # journal only: sent, not answered yet (a kill leaves it open)
    KILLED = "killed"  # replayed: the run died with the call in flight; booked at its worst
    CANCELLED = "cancelled"  # interrupted while in flight


class CostSource(StrEnum):
    OPENROUTER = "openrouter"  # usage.cost of the response
    CATALOG = "catalog"  # tokens × /models price
    GENERATION = "generation"  # GET /generation
    RESERVED = "reserved"  # outcome unknown: booked at its worst case until the bill is known
    NONE = "none"  # nothing billed and nothing reported
    BATCH_APPORTIONED = "batch_apportioned"  # a share of the batch's usage.cost, by tokens


@dataclass(frozen=True, slots=True)
class Classification:
    """Output of the classifier: why a record goes where it goes."""

    task_type: str
    complexity: str
    reason: str  # e.g. "rule:code_fence", "task_field", "job.task"
    score: float | None = None  # 0..1, higher = send it stronger (a scoring router, issue 12)
    # per quality level (thresholds.LEVELS, cheapest first): expected quality and cost factor;
    # the cost dial routes on these (a scoring router only)
    tier_quality: tuple[float, ...] | None = None
    tier_cost: tuple[float, ...] | None = None


# Not frozen (issue 11): one is built per record or call on the hot path, and a frozen
# dataclass's __init__ costs ~5x a plain one's (2.6 vs 0.5 µs for 8 fields). Treat as read-only.
@dataclass(slots=True)
class Record:
    """One input line. `fields` is None when the line is not a JSON object (`error` says why)."""

    line_no: int
    key: str
    fields: dict[str, Any] | None
    error: str | None = None
    line_fp: int | None = None  # the line's fingerprint under the job's prompt (`reader.line_fp`)


# Not frozen (issue 11): one is built per record or call on the hot path, and a frozen
# dataclass's __init__ costs ~5x a plain one's (2.6 vs 0.5 µs for 8 fields). Treat as read-only.
@dataclass(slots=True)
class Usage:
    """The `usage` object of an answer, as reported (nothing is validated or priced here).

    `cost` is what OpenRouter charged the balance. With BYOK (`is_byok`) that is only
    OpenRouter's fee: the provider bills the user's own key `upstream_cost` on top, so the
    call cost `cost + upstream_cost` (see `billed`). `present` is False when the answer
    carried no `usage` object at all (the cost is then only in GET /generation).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = None  # usage.cost as the provider reported it, exact
    upstream_cost: Decimal | None = None  # usage.cost_details.upstream_inference_cost
    is_byok: bool = False
    reasoning_tokens: int = 0  # usage.completion_tokens_details.reasoning_tokens
    web_search_requests: int = 0  # usage.server_tool_use(_details).web_search_requests
    present: bool = True

    @property
    def billed(self) -> Decimal | None:
        """Everything this call was billed, or None when the answer does not say."""
        if self.cost is None:
            return None
        if not self.is_byok:
            return self.cost
        return _sum(self.cost, self.upstream_cost)


@dataclass(slots=True)
class CallSeen:
    """What the client learned of one call while it ran, written the moment it is known.

    A call cancelled in flight returns neither an answer nor an error; the caller passes this
    handle in and still finds the generation id (the header, else the first chunk's `id`), so
    the call it may be billed for can be asked about at GET /generation.
    """

    generation_id: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationCost:
    """What GET /generation says a generation cost (`total_cost`, `upstream_inference_cost`)."""

    total_cost: Decimal  # charged to the OpenRouter balance (the fee alone under BYOK)
    upstream_cost: Decimal | None = None
    is_byok: bool = False
    model: str | None = None  # the model that served (`model`), when it says

    @property
    def billed(self) -> Decimal | None:
        """The whole bill: the fee plus, under BYOK, the provider's charge to the user's key."""
        if not self.is_byok:
            return self.total_cost
        return _sum(self.total_cost, self.upstream_cost)


def _sum(fee: Decimal, upstream: Decimal | None) -> Decimal | None:
    """fee + upstream; NaN (never an exception) when either is not a finite amount."""
    if upstream is None:
        return None
    if not (fee.is_finite() and upstream.is_finite()):
        return Decimal("NaN")
    return fee + upstream


# Not frozen (issue 11): one is built per record or call on the hot path, and a frozen
# dataclass's __init__ costs ~5x a plain one's (2.6 vs 0.5 µs for 8 fields). Treat as read-only.
@dataclass(slots=True)
class Completion:
    """A successful chat completion as the client hands it to the runner."""

    content: str | None
    finish_reason: str | None
    native_finish_reason: str | None
    model: str  # the model that actually served (response.model)
    provider: str | None
    generation_id: str | None
    usage: Usage
    http_status: int = 200


@dataclass(slots=True)
class ResultRow:
    """One row of `results` (design §4). cost_usd is the sum over all attempts of the record."""

    job_name: str
    record_key: str
    run_id: str
    line_no: int
    status: RecordStatus
    task_type: str | None = None
    complexity: str | None = None
    tier: str | None = None
    classifier: str | None = None
    model_requested: str | None = None
    model_served: str | None = None
    provider: str | None = None
    output: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: Decimal = Decimal(0)
    cost_source: str | None = None
    latency_ms: int | None = None
    attempts: int = 0
    escalations: int = 0
    error_type: str | None = None
    error_message: str | None = None
    generation_id: str | None = None
    request_fp: str | None = None  # fingerprint of the rendered request (migration 2)
    arm: str | None = None  # experiment arm, None outside an experiment (migration 6)
    line_fp: int | None = None  # the input line under the prompt: resume skips unparsed (mig. 9)
    created_at: datetime | None = None


@dataclass(slots=True)
class AttemptRow:
    """One row of `attempts`: every call, so every routing decision can be audited."""

    run_id: str
    job_name: str
    record_key: str
    attempt_no: int
    tier: str
    model: str
    started_at: datetime
    latency_ms: int
    http_status: int | None
    outcome: AttemptOutcome
    error_type: str | None = None
    error_message: str | None = None
    cost_usd: Decimal = Decimal(0)
    cost_source: str = CostSource.NONE
    generation_id: str | None = None
    reserved_usd: Decimal | None = None  # the call's worst-case reservation (migration 4)
    usage_cost_usd: Decimal | None = None  # usage.cost as reported (the fee alone under BYOK)
    upstream_cost_usd: Decimal | None = None  # BYOK: what the provider billed the user's key
    listed_usd: Decimal | None = None  # list-price worst case, a ratio's base (migration 11)
    served_model: str | None = None  # the model the answer names (migration 12)
    served_listed_usd: Decimal | None = None  # a native fallback's own list-price worst case


@dataclass(frozen=True, slots=True)
class CostFix:
    """The real cost of an attempt booked at its reservation (or catalogue price), from GET
    /generation. `recompute_result`: set the record's `results.cost_usd` to the sum of its
    attempts once fixed; off while the record is still worked on in this run (its row is not
    written yet: the run adds the fix to it). `served_model`: fills a NULL `served_model`."""

    run_id: str
    job_name: str
    record_key: str
    attempt_no: int
    cost_usd: Decimal
    cost_source: str
    usage_cost_usd: Decimal | None = None
    upstream_cost_usd: Decimal | None = None
    recompute_result: bool = True
    generation_id: str | None = None
    """The generation the figure is of: the fix applies to the attempt row that carries it
    only. (run, record, attempt_no) is not a key: an expired batch's item and its round-2
    resubmission are both attempt 0 of one run. None matches no row (left reserved)."""
    served_model: str | None = None


@dataclass(frozen=True, slots=True)
class ReservedAttempt:
    """An attempt of an earlier run still booked at its reservation, with a generation id."""

    run_id: str
    job_name: str
    record_key: str
    attempt_no: int
    generation_id: str
    cost_usd: Decimal


@dataclass(slots=True)
class RunCounts:
    """Counters kept by the runner and written to `runs`."""

    seen: int = 0
    done: int = 0
    failed: int = 0
    invalid: int = 0
    pending: int = 0
    skipped: int = 0  # already final in the store (resume)
    duplicates: int = 0  # lines whose key was already seen in this input (skipped)
    earlier_failed: int = 0  # failed/invalid in an earlier run and still in the input
    cost_usd: Decimal = field(default_factory=lambda: Decimal(0))


@dataclass(frozen=True, slots=True)
class ResumeState:
    """What the store knows before a run: how many records are final, today's spend. Which
    are final is not held here (a job's history may be millions of keys): a `KeyLookup`
    answers for the input's own keys, one record at a time.
    """

    final_count: int = 0  # the job's records already final (for the run's first line)
    spent: Decimal = Decimal(0)  # today's spend in the budget's scope
    # What the last days' calls taught (`store.ratios`, seeding `runner.cost.Pricer`): per
    # model, the largest cost / reservation above 1, and the largest cost where it reserved $0.
    ratios: Mapping[str, Decimal] = field(default_factory=dict)
    floors: Mapping[str, Decimal] = field(default_factory=dict)
    climbed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # `store.runs.climbed`


class Known(NamedTuple):
    """What the store knew of one input record's key before the run."""

    duplicate: bool = False  # the key came earlier in this input: the first one counts
    final: bool = False  # final already (in the run's final statuses)
    fp: str | None = None  # with `final`: its prompt fingerprint (None: kept before there were)
    failed_before: bool = False  # with `final`: failed or invalid in an earlier run
    line_fp: int | None = None  # with `final`: its line's fingerprint (None: kept before, or none)


NOT_KNOWN = Known()


class KeyLookup(Protocol):
    """The resume facts of an input's records, asked in input order, once per record."""

    def next(self, key: str) -> Known:
        """The facts for the next record of the input, whose key is `key`."""
        ...


class BatchStatus(StrEnum):
    """Our side of a `batches` row; OpenRouter's own statuses (validating, in_progress, …) are
    stored as they come while the batch is open."""

    INTENT = "intent"  # written before the POST: its outcome is unknown until looked up
    SUBMITTED = "submitted"  # the POST answered 202 with a batch id
    COLLECTED = "collected"  # terminal, and its items' rows are written (same transaction)
    ABANDONED = "abandoned"  # an intent whose POST never landed: its records go round again
    REJECTED = "rejected"  # the POST was refused (e.g. no :batch endpoint): nothing billed


@dataclass(slots=True)
class BatchItem:
    """One record of a batch: what its result row needs when the batch is collected."""

    key: str
    line_no: int
    custom_id: str
    task_type: str
    complexity: str
    classifier: str
    fp: str
    prompt_bound: int


@dataclass(slots=True)
class BatchRow:
    """One row of `batches` (migration 8)."""

    batch_key: str
    job_name: str
    run_id: str
    tier: str
    model: str
    items: list[BatchItem]
    intent_at: datetime
    reserved_usd: Decimal
    status: str = BatchStatus.INTENT
    round: int = 1  # 2: resubmitted after its first batch expired
    batch_id: str | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    settled_usd: Decimal | None = None
    error_message: str | None = None
