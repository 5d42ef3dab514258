"""The run's start overlapped (issue 11): the pass over the input begins as soon as the store is
open, beside the catalogue, the budget's reads and the collection of earlier runs' batches.
What those steps make final must still never be sent again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from batch_standin import BatchStandIn
from test_batch_lane import _job, _run, _statuses

from batchroute.runner.resume import open_lookup, pending
from batchroute.store import ResultStore
from batchroute.types import Record, RecordStatus

Serve = Callable[[BatchStandIn], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(standin: BatchStandIn) -> str:
        server = TestServer(standin.app(), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/api/v1"))

    yield start
    for server in servers:
        await server.close()


@dataclass
class GatedStandIn(BatchStandIn):
    """Answers a batch's poll only once a pass over the input has finished in `gate` (its
    answers file exists: `store/resume.py`), so that the run collects the batch after the
    pass, not before. A run whose pass comes after the collection (the order before issue 11)
    gets its answer at the deadline all the same: the gate never decides what is sent."""

    gate: Path | None = None

    async def get(self, request: web.Request) -> web.Response:
        if self.gate is not None:
            deadline = time.monotonic() + 20
            # A file is the condition: no event to wait on (the pass runs in the run's thread).
            while not any(self.gate.glob("answers-*.duckdb")) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        return await super().get(request)


async def test_records_collected_from_an_earlier_batch_at_start_are_not_sent_again(
    tmp_path: Path, serve: Serve
) -> None:
    standin = GatedStandIn(polls_to_finish=1)
    job = _job(tmp_path, 50)
    url = await serve(standin)
    first = await _run(job, url, wait=False)  # submits one batch of 50, ends without it
    assert first.batches_in_flight == 1
    assert len(standin.posts) == 1
    standin.gate = tmp_path / "results.duckdb.resume.tmp"
    second = await _run(job, url, wait=False)  # its pass ends, then it collects the batch
    assert second.batches_in_flight == 0
    assert len(standin.posts) == 1, "the collected records were batched again"
    assert standin.sync_calls == 0
    assert _statuses(tmp_path / "results.duckdb") == {"done": 50}
    assert second.counts.skipped == 50


def _verdicts(store: ResultStore, path: Path, *, history: bool) -> list[tuple[int, bool]]:
    """The feed's pass: (line, duplicate) for each record read, and the totals, as a run
    makes it (`runner/resume.py`)."""
    scan = open_lookup(store, "j", path, id_field="id", salt=b"s", history=history,
                       final_statuses=frozenset({RecordStatus.DONE}))  # fmt: skip
    try:
        out = []
        for item in pending(scan, id_field="id", salt=b"s"):
            assert isinstance(item, Record)  # nothing is final: no line is skipped unread
            out.append((item.line_no, scan.lookup.next(item.key).duplicate))
        lk = scan.lookup
        out.append((lk.records, lk.duplicates == lk.records - len(set(KEYS))))
    finally:
        scan.close()
    return out


KEYS = ["a", "b", "a", "c", "b", "a"]


def test_the_pass_of_a_job_s_first_run_needs_no_database_file(tmp_path: Path) -> None:
    """Beside the store's open (a new file), the pass never opens the file, and its verdicts
    (duplicates, blank and bad lines) are those of a pass over an empty database."""
    path = tmp_path / "in.jsonl"
    lines = [orjson.dumps({"id": k, "text": str(i)}) for i, k in enumerate(KEYS)]
    path.write_bytes(b"\n".join([*lines[:3], b"", b"{not json", *lines[3:]]) + b"\n")
    missing = tmp_path / "new.duckdb"
    without = _verdicts(ResultStore(missing), path, history=False)
    assert not missing.exists()
    assert not Path(f"{missing}.resume.tmp").exists()  # its spill directory went at close
    empty = ResultStore(tmp_path / "empty.duckdb")
    empty.migrate()
    assert without == _verdicts(empty, path, history=True)
    assert [d for _, d in without[:-1]] == [False, False, True, False, False, True, True]
