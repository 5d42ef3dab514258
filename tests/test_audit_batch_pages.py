"""A batch's paid answers survive a results page that fails for a moment (audit).

A finished batch's answers are read from the paginated `GET /batches/{id}/results`; the batch
object's inline `results` are only a fallback, and they may be null (batch-api.md §6: [QS-aug]
has them null for an expired batch; a large batch is read by pages). When a page other than the
first failed for a moment (a 503 on a bad night) or answered 404, the lane took the inline
results (null: no answer at all) or the pages read so far, and collected the batch on that:
every answer it did not read was marked unanswered, its record sent again (paid twice) and the
paid answer never stored. The batch was then `collected`, so no later run read it again.

Real CLI (`run --wait`) in a subprocess against the Batch API stand-in, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from batch_standin import MODEL, BatchStandIn
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async

N = 120  # three pages of 50


@dataclass
class Flaky(BatchStandIn):
    """No inline results on the batch object; the page at `fail_cursor` fails `fail_times`
    times with `fail_status` before it answers."""

    fail_cursor: str | None = "50"  # None: the first page
    fail_status: int = 503
    fail_times: int = 1
    result_gets: int = 0

    async def get(self, request: web.Request) -> web.Response:
        resp = await super().get(request)
        assert isinstance(resp.body, bytes)
        doc = orjson.loads(resp.body)
        if isinstance(doc, dict) and "results" in doc:
            doc["results"] = None
        return web.json_response(doc, status=resp.status)

    async def results(self, request: web.Request) -> web.Response:
        self.result_gets += 1
        if request.query.get("cursor") == self.fail_cursor and self.fail_times > 0:
            self.fail_times -= 1
            msg = "Service temporarily unavailable" if self.fail_status == 503 else "not found"
            return web.json_response(
                {"error": {"code": self.fail_status, "message": msg}}, status=self.fail_status
            )
        return await super().results(request)


async def _run_waiting(tmp_path: Path, base_url: str) -> tuple[int, str]:
    """`run --wait` of N records on a batch tier against the stand-in at `base_url`."""
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(tmp_path, quality=[], endpoint={"base_url": base_url, "api_key_env": KEY_ENV})
    job["tiers"] = {"mid": {"models": [MODEL], "batch": True}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return await run_cli_async("run", str(path), "--wait")


@pytest.mark.parametrize(
    ("fail_cursor", "fail_status"),
    [("50", 503), ("50", 404), (None, 404), (None, 503)],
    ids=["page2-503", "page2-404", "page1-404", "page1-503"],
)
async def test_a_failed_results_page_loses_no_paid_answer(
    tmp_path: Path, serve: Any, fail_cursor: str | None, fail_status: int
) -> None:
    """Before, 503 on page 2: all 120 answers of the batch (billed $0.0237) were dropped and
    the 120 records paid again synchronously: $0.0711 billed, no batch answer stored. 404 on
    page 2: the 70 answers past page 1 dropped and paid again: $0.0513 billed. 404 on page 1
    (read as "no results endpoint", the inline results null): all 120 batch answers dropped and
    paid again synchronously, $0.0711 billed for $0.0237 of work (money3). Now $0.0237."""
    standin = Flaky(page_size=50, fail_cursor=fail_cursor, fail_status=fail_status)
    db = tmp_path / "results.duckdb"
    code, err = await _run_waiting(tmp_path, await serve(standin))
    assert code == 0, err
    assert standin.fail_times == 0, "the page never failed: the test proves nothing"
    assert len(standin.batches) == 1
    assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
    assert standin.sync_calls == 0, f"{standin.sync_calls} paid answers were paid for again"
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert attempts >= standin.total, (attempts, standin.total)
    assert query(db, "SELECT count(*) FROM attempts WHERE attempt_no > 0") == [(0,)]


@dataclass
class AfterCursor(BatchStandIn):
    """Results pages that say `has_more` and name the next page the way the list endpoint
    does (`last_id`, read with `after`), not with `next_cursor`: a shape the client cannot
    follow. The batch object carries its inline results."""

    async def results(self, request: web.Request) -> web.Response:
        resp = await super().results(request)
        assert isinstance(resp.body, bytes)
        doc = orjson.loads(resp.body)
        if isinstance(doc, dict) and doc.get("has_more"):
            doc["last_id"] = doc.pop("next_cursor")
        return web.json_response(doc, status=resp.status)


async def test_pages_the_client_cannot_follow_are_not_taken_as_all(
    tmp_path: Path, serve: Any
) -> None:
    """Before: the first page (50 answers) was taken as all there is: the other 70 paid
    answers were dropped and their records paid again synchronously. Now the inline results
    stand in."""
    standin = AfterCursor(page_size=50)
    db = tmp_path / "results.duckdb"
    code, err = await _run_waiting(tmp_path, await serve(standin))
    assert code == 0, err
    assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
    assert standin.sync_calls == 0, f"{standin.sync_calls} paid answers were paid for again"
