"""batchroute: run LLM batch jobs on OpenRouter cheaply and safely.

The public API: load a job with `load_spec`, run it with `run_job` (or `run_job_async`) and
`RunOptions`, read what it did from the `RunReport` or the `ResultStore`. Every error it raises
on purpose is a `BatchrouteError` (the tree is drawn in `batchroute.errors`).
"""

from __future__ import annotations

__version__ = "0.1.0"  # before the imports: runner and cli import it from here

from batchroute.catalog import Catalog
from batchroute.errors import (
    AuthError,
    BatchrouteError,
    ConfigError,
    CreditsExhausted,
    DailyCapReached,
    FatalUpstreamError,
    InputError,
    LockHeld,
    ProviderUnavailable,
    QualityFailed,
    RateLimited,
    RejectedError,
    RequestRejected,
    RetryableError,
    SpecError,
    StoreError,
    UpstreamError,
)
from batchroute.runner import RunOptions, RunReport, run_job, run_job_async
from batchroute.spec import JobSpec, load_spec
from batchroute.store import ResultStore

__all__ = [
    "AuthError",
    "BatchrouteError",
    "Catalog",
    "ConfigError",
    "CreditsExhausted",
    "DailyCapReached",
    "FatalUpstreamError",
    "InputError",
    "JobSpec",
    "LockHeld",
    "ProviderUnavailable",
    "QualityFailed",
    "RateLimited",
    "RejectedError",
    "RequestRejected",
    "ResultStore",
    "RetryableError",
    "RunOptions",
    "RunReport",
    "SpecError",
    "StoreError",
    "UpstreamError",
    "__version__",
    "load_spec",
    "run_job",
    "run_job_async",
]
