"""What a run says of its batch-lane calls, against the Batch API stand-in on a loopback port.

A BYOK batch whose bill lacks the upstream charge is booked at its reservation (batch-api.md,
openrouter-api.md: BYOK answers without upstream cost). `batchroute report` counts those rows
as "booked at its reservation"; the run's end note must say the same of the same rows. It said
nothing: the lane writes its rows with the store, not through `Book.attempt`, which counts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import yaml
from batch_standin import MODEL, BatchStandIn
from factories import job_dict, texts, write_jsonl

from batchroute.report import reserved_line
from batchroute.runner import RunOptions, run_job_async
from batchroute.runner.work import RunReport
from batchroute.spec import load_spec
from batchroute.store import ResultStore
from batchroute.types import RunStatus


async def _no_sleep(_s: float) -> None:
    return None


def _job(tmp_path: Path, n: int) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(tmp_path, quality=[])
    job["tiers"] = {"mid": {"models": [MODEL], "batch": True}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


async def _run(job: Path, base_url: str, *, wait: bool) -> RunReport:
    opts = RunOptions(
        api_key="sk-or-v1-test", base_url=base_url, db_path=job.parent / "results.duckdb",
        handle_signals=False, quiet=True, sleep=_no_sleep, jitter_seed=0,
        log=lambda _l: None, wait=wait,
    )  # fmt: skip
    return await run_job_async(load_spec(job), opts)


def _reserved_rows(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(
            "SELECT COUNT(*), COUNT(generation_id) FROM attempts WHERE cost_source = 'reserved'"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def _note_and_report_agree(report: RunReport, db: Path, n: int) -> None:
    left, with_id = _reserved_rows(db)
    assert left == n
    assert with_id == n  # answered items carry a generation id: the next run asks about them
    note = next((x for x in report.notes if "stay booked at it" in x), None)
    assert note is not None, report.notes  # said nothing: the batch rows were not counted
    _, tail = note.split(f"; {n} stay booked at it")
    assert tail == f": the next run asks /generation again for {n} calls", note
    line = reserved_line(ResultStore(db).report(by=[], since=None, job_name=None))
    assert line is not None
    assert line.endswith("not yet confirmed by OpenRouter" + tail), line


async def test_a_waiting_run_counts_batch_calls_left_at_their_reservation(
    tmp_path: Path, serve: Any
) -> None:
    job = _job(tmp_path, 8)
    report = await _run(job, await serve(BatchStandIn(byok=False)), wait=True)
    assert report.status is RunStatus.COMPLETED
    _note_and_report_agree(report, tmp_path / "results.duckdb", 8)


async def test_the_run_that_collects_an_earlier_batch_counts_them(
    tmp_path: Path, serve: Any
) -> None:
    """Collected at the start of the next run (`collect_earlier`): the rows are that run's."""
    job = _job(tmp_path, 5)
    url = await serve(BatchStandIn(byok=False, polls_to_finish=2))
    first = await _run(job, url, wait=False)
    assert first.batches_in_flight == 1
    second = await _run(job, url, wait=False)
    assert second.batches_in_flight == 1  # the stand-in's second GET: still running
    third = await _run(job, url, wait=False)
    assert third.batches_in_flight == 0
    _note_and_report_agree(third, tmp_path / "results.duckdb", 5)
