"""The results database: `ResultStore` and the report data it produces. The only SQL in batchroute.

Modules: columns (from the row dataclasses), migrations, connect, encode, replay, fixes, reports,
resume (which input keys are final, without holding the job's history).
"""

from __future__ import annotations

from .migrations import SCHEMA_VERSION
from .replay import unreplayed
from .reports import DIMENSIONS, ReportData, ReportRow
from .result_store import ResultStore
from .resume import ResumeLookup

__all__ = [
    "DIMENSIONS",
    "SCHEMA_VERSION",
    "ReportData",
    "ReportRow",
    "ResultStore",
    "ResumeLookup",
    "unreplayed",
]
