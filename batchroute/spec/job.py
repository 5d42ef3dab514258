"""The job file as one model: `JobSpec`, built from the parts in `spec.parts`, and its routing.

Data and validation only: reading the file is `spec.load`'s; no network, database or
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from batchroute.spec.parts import (
    QUALITY_CHECKS,
    BudgetSpec,
    EndpointSpec,
    ExperimentSpec,
    LimitsSpec,
    OutputSpec,
    PromptSpec,
    QualityCheck,
    RequestSpec,
    RoutingPolicy,
    TierSpec,
    _Strict,
)
from batchroute.types import (
    COMPLEXITIES,
    DEFAULT_COMPLEXITY_ROUTING,
    DEFAULT_ROUTING,
    TASK_TYPES,
    TIER_NAMES,
)

DEFAULT_TIERS: dict[str, list[str]] = {
    "budget": ["meta-llama/llama-3.1-8b-instruct", "qwen/qwen-2.5-7b-instruct"],
    "mid": ["openai/gpt-4o-mini", "google/gemini-2.0-flash-001"],
    "standard": ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"],
    "premium": ["openai/o1", "openai/o3"],
}
"""Design §2's tiers, cheapest → strongest; every id is in the May 2026 catalogue."""

Classifier = Literal["heuristic", "learned"]
DEFAULT_CLASSIFIER: Classifier = "learned"
"""The classifier of a job that names none (issue 12: chosen by the routing evaluation,
docs/routing-eval.md; the README says why). `classifier: heuristic` keeps the keyword rules."""


class JobSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    input: Path
    id_field: str | None = None
    prompt: PromptSpec
    task: str | None = None
    task_field: str | None = None
    classifier: Classifier = DEFAULT_CLASSIFIER
    routing_policy: RoutingPolicy | None = None  # the cost dial: needs a classifier that scores
    experiment: ExperimentSpec | None = None
    tiers: dict[str, TierSpec] = Field(
        default_factory=lambda: {k: TierSpec(models=tuple(v)) for k, v in DEFAULT_TIERS.items()}
    )
    routing: dict[str, str] = Field(default_factory=dict)
    complexity_routing: dict[str, str] = Field(default_factory=dict)
    quality: tuple[QualityCheck, ...] = QUALITY_CHECKS
    # What climbs to the next tier: answers that fail a quality check (the default), and with
    # "unavailable" also records whose whole chain was down (dearer, so opt-in).
    escalate_on: tuple[Literal["quality", "unavailable"], ...] = ("quality",)
    request: RequestSpec
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    budget: BudgetSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    endpoint: EndpointSpec = Field(default_factory=EndpointSpec)
    path: Path | None = Field(default=None, exclude=True)  # where the job file was read from

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | None) -> str | None:
        if v is not None and v not in TASK_TYPES:
            raise ValueError(f"unknown task type {v!r}; known: {', '.join(TASK_TYPES)}")
        return v

    @field_validator("routing_policy")
    @classmethod
    def _scored(cls, v: RoutingPolicy | None, info: ValidationInfo) -> RoutingPolicy | None:
        if v is not None and info.data.get("classifier") == "heuristic":
            raise ValueError(
                "the cost dial calibrates the router's score, and the heuristic classifier "
                "gives none: set `classifier: learned`, or leave routing_policy out"
            )
        return v

    @model_validator(mode="after")
    def _routing_targets(self) -> JobSpec:
        if not self.tiers:
            raise ValueError("tiers: at least one tier is needed")
        for table, keys in ((self.routing, TASK_TYPES), (self.complexity_routing, COMPLEXITIES)):
            for k, tier in table.items():
                if k not in keys:
                    raise ValueError(f"routing key {k!r} is not one of {', '.join(keys)}")
                if tier not in self.tiers:
                    raise ValueError(f"routing {k!r} → {tier!r}: no such tier")
        return self

    def tier_for_task(self, task_type: str) -> str:
        """Tier for a task type: the job's routing, else the default table, else the nearest."""
        tier = self.routing.get(task_type) or DEFAULT_ROUTING.get(task_type, "mid")
        return self._existing(tier)

    def tier_for_complexity(self, complexity: str) -> str:
        tier = self.complexity_routing.get(complexity) or DEFAULT_COMPLEXITY_ROUTING.get(
            complexity, "mid"
        )
        return self._existing(tier)

    def _existing(self, tier: str) -> str:
        """Map a default tier name onto this job's tiers when the job renamed or dropped some."""
        if tier in self.tiers:
            return tier
        names = list(self.tiers)
        rank = TIER_NAMES.index(tier) if tier in TIER_NAMES else 1
        return names[min(rank, len(names) - 1)]

    def next_tier(self, tier: str) -> str | None:
        names = list(self.tiers)
        i = names.index(tier)
        return names[i + 1] if i + 1 < len(names) else None

    @property
    def database_path(self) -> Path:
        return self.output.database
