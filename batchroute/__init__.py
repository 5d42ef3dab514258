"""batchroute: run LLM batch jobs on OpenRouter cheaply and safely.

The public API: load a job with `load_spec`, run it with `run_job` (or `run_job_async`) and
`RunOptions`, read what it did from the `RunReport` or the `ResultStore`. Every error it raises
on purpose is a `BatchrouteError` (the tree is drawn in `batchroute.errors`).

The re-exports are lazy (PEP 562): `import batchroute.simulator` or `batchroute.errors` runs this
file first, and must not pay for DuckDB, tqdm or the runner. A name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchroute._version import __version__

if TYPE_CHECKING:  # what mypy and editors see; at run time `__getattr__` below imports them
    from batchroute.catalog import Catalog
    from batchroute.errors import (
        AuthError,
        BatchrouteError,
        ConfigError,
        CreditsExhausted,
        DailyCapReached,
        FatalUpstreamError,
        FileHeld,
        InputError,
        LockHeld,
        NoBatchEndpoint,
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
    "FileHeld",
    "InputError",
    "JobSpec",
    "LockHeld",
    "NoBatchEndpoint",
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

# Where each lazy name lives (the same modules as the TYPE_CHECKING block above).
_ERRORS = (
    "AuthError",
    "BatchrouteError",
    "ConfigError",
    "CreditsExhausted",
    "DailyCapReached",
    "FatalUpstreamError",
    "InputError",
    "LockHeld",
    "NoBatchEndpoint",
    "ProviderUnavailable",
    "QualityFailed",
    "RateLimited",
    "RejectedError",
    "RequestRejected",
    "RetryableError",
    "SpecError",
    "StoreError",
    "UpstreamError",
    "FileHeld",
)
_LAZY: dict[str, str] = {
    **dict.fromkeys(_ERRORS, "batchroute.errors"),
    "Catalog": "batchroute.catalog",
    "JobSpec": "batchroute.spec",
    "load_spec": "batchroute.spec",
    "ResultStore": "batchroute.store",
    "RunOptions": "batchroute.runner",
    "RunReport": "batchroute.runner",
    "run_job": "batchroute.runner",
    "run_job_async": "batchroute.runner",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then cache it in this module's namespace."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
