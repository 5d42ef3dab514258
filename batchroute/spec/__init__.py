"""The job file: `JobSpec`, validated once at the edge, then passed around as data (a leaf).

Parts: `parts` (field types, sub-models), `job` (`JobSpec`), `load` (YAML → `JobSpec`). It
reads the job file and nothing else: no network, no database, no environment.
"""

from __future__ import annotations

from batchroute.spec.job import DEFAULT_CLASSIFIER, DEFAULT_TIERS, JobSpec
from batchroute.spec.load import DuplicateKeyError, load_spec
from batchroute.spec.parts import (
    MAX_DAILY_USD,
    QUALITY_CHECKS,
    BudgetSpec,
    EndpointSpec,
    ExperimentSpec,
    LimitsSpec,
    MaxPrice,
    OutputSpec,
    PromptSpec,
    QualityCheck,
    RequestSpec,
    RoutingPolicy,
    TierSpec,
)

__all__ = [
    "DEFAULT_CLASSIFIER",
    "DEFAULT_TIERS",
    "MAX_DAILY_USD",
    "QUALITY_CHECKS",
    "BudgetSpec",
    "DuplicateKeyError",
    "EndpointSpec",
    "ExperimentSpec",
    "JobSpec",
    "LimitsSpec",
    "MaxPrice",
    "OutputSpec",
    "PromptSpec",
    "QualityCheck",
    "RequestSpec",
    "RoutingPolicy",
    "TierSpec",
    "load_spec",
]
