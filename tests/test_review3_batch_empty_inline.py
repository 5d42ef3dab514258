"""A completed batch whose first results page 404s for a moment and whose inline `results`
is an empty list, not null, keeps its paid answers (review3).

money3 made a `completed` batch that says items completed, serves no first page (404) and
has no inline copy stay open, to be read at a later poll. "No inline copy" was tested as
"not a list": an empty `results: []` (a batch object that leaves its lines to the paginated
endpoint, serialised as an empty array rather than null) was taken as the batch's whole
answer, and every paid answer of the batch was dropped and its record paid again.

Real CLI (`run --wait`) in a subprocess against the Batch API stand-in, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from subprocs import query
from test_audit_batch_pages import Flaky, N, _run_waiting


@dataclass
class EmptyInline(Flaky):
    """Inline `results` an empty list; the first page answers 404 once."""

    async def get(self, request: web.Request) -> web.Response:
        resp = await super().get(request)
        assert isinstance(resp.body, bytes)
        doc = orjson.loads(resp.body)
        if isinstance(doc, dict) and "results" in doc:
            doc["results"] = []
        return web.json_response(doc, status=resp.status)


@pytest.mark.parametrize(
    ("fail_cursor", "fail_status"), [(None, 404), ("50", 503)], ids=["page1-404", "page2-503"]
)
async def test_an_empty_inline_list_is_not_the_answer_of_a_completed_batch(
    tmp_path: Path, serve: Any, fail_cursor: str | None, fail_status: int
) -> None:
    """Before: all 120 answers (billed $0.0237) dropped and paid again synchronously,
    $0.071118 billed, on a 404 on the first page or a 503 on the second alike."""
    standin = EmptyInline(page_size=50, fail_cursor=fail_cursor, fail_status=fail_status)
    db = tmp_path / "results.duckdb"
    code, err = await _run_waiting(tmp_path, await serve(standin))
    assert code == 0, err
    assert standin.fail_times == 0, "the page never failed: the test proves nothing"
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert attempts >= standin.total, (attempts, standin.total)
    assert standin.sync_calls == 0, (standin.sync_calls, len(standin.batches), standin.total)
    assert len(standin.batches) == 1
    assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
