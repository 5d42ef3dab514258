"""Runner: the only package that wires the stages together.

- `work`: options, report, a record's trail, the stop switch.
- `dispatch`: one record through its fallback chain under the budget and the limiter.
- `book`: rows, the write-ahead journal and the one store writer.
- `run`: set-up, worker pools, signals and shutdown; `feed`: the feeder.
"""

from __future__ import annotations

from batchroute.runner.run import Runner, run_job, run_job_async
from batchroute.runner.work import RunOptions, RunReport, WorkItem, utcnow

__all__ = [
    "RunOptions",
    "RunReport",
    "Runner",
    "WorkItem",
    "run_job",
    "run_job_async",
    "utcnow",
]
