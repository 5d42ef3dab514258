"""A job's first run sends before its pass over the input ends (issue 11).

On a fresh run (no database, no journal) nothing can be final: the run feeds the input's first
lines (`runner/resume.Head`, decided in memory) while the whole pass is still being made, and
goes on from the pass's answers where it is. The verdicts must be the pass's, whatever the
position of the switch, and the first request must not wait for the pass.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from aiohttp import web
from factories import texts, write_job, write_jsonl

import batchroute.runner.early as early
from batchroute.errors import AuthError
from batchroute.runner import RunOptions, RunReport, run_job_async
from batchroute.runner.resume import Head, open_lookup, pending
from batchroute.simulator.app import create_app
from batchroute.simulator.scenario import Scenario
from batchroute.spec import load_spec
from batchroute.store import ResultStore
from batchroute.types import Record, RecordStatus, RunStatus

SALT = b"s"
KEYS = ["a", "b", "a", "c", None, "b", "d", "a", "e", "c", None, "f", "d", "g", "b", "h"]


def _input(path: Path, keys: list[str | None]) -> Path:
    """Records with the given ids (None: a blank line), a BOM, CRLF endings and a bad line."""
    lines = [
        b"" if k is None else orjson.dumps({"id": k, "text": str(i)}) for i, k in enumerate(keys)
    ]
    lines.insert(5, b"{not json")
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    return path


def _pass(tmp_path: Path, path: Path) -> Any:
    store = ResultStore(tmp_path / "new.duckdb")
    return open_lookup(store, "j", path, id_field="id", salt=SALT,
                       final_statuses=frozenset({RecordStatus.DONE}), history=False)  # fmt: skip


def _fed(head: Head | None, switch_after: int, tmp_path: Path, path: Path) -> list[Any]:
    """What the feed sees: `switch_after` records from the head (all of it if it ends first),
    then the pass from there on; each record's (line, key, duplicate, its line_fp)."""
    out: list[Any] = []
    at = 0
    if head is not None:
        for rec in head.feed(id_field="id", salt=SALT):
            if len(out) == switch_after:
                break
            out.append((rec.line_no, rec.key, head.next(rec.key).duplicate, rec.line_fp))
            at = rec.line_no
        else:
            at = head.lines
    scan = _pass(tmp_path, path)
    try:
        for item in pending(scan, id_field="id", salt=SALT, start=at):
            assert isinstance(item, Record)  # nothing is final: no line skipped unread
            out.append((item.line_no, item.key, scan.lookup.next(item.key).duplicate, item.line_fp))
    finally:
        scan.close()
    return out


@pytest.mark.parametrize("limit", [1, 4, 7, 12, 17, 40])
def test_a_head_then_the_pass_gives_the_pass_s_verdicts_wherever_the_feed_switches(
    tmp_path: Path, limit: int
) -> None:
    path = _input(tmp_path / "in.jsonl", KEYS)
    whole = _fed(None, 0, tmp_path, path)
    assert [d for _, _, d, _ in whole].count(True) == 6  # repeats before and after any head
    head = Head(path, id_field="id", limit=limit)
    assert head.complete == (limit >= len(KEYS) + 1)
    scan = _pass(tmp_path, path)
    try:
        if head.complete:  # the run's totals come from the head then: the pass's own
            lk = scan.lookup
            assert (head.records, head.duplicates, head.final) == (lk.records, lk.duplicates, 0)
    finally:
        scan.close()
    for switch_after in range(limit + 2):
        head = Head(path, id_field="id", limit=limit)
        assert _fed(head, switch_after, tmp_path, path) == whole, (limit, switch_after)


class _FirstCall:
    """The simulator, on a real loopback port, noting its first chat request (a thread's
    event: the pass waits for it in its own thread)."""

    def __init__(self) -> None:
        self.first = threading.Event()
        self.calls = 0
        self.deny = False  # answer every chat request 401 (a revoked key): the run stops

    @web.middleware
    async def note(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.endswith("/chat/completions"):
            self.calls += 1
            self.first.set()
            if self.deny:
                return web.json_response({"error": {"code": 401, "message": "no"}}, status=401)
        return await handler(request)


async def _run(job: Path, url: str, lines: list[str], **kw: Any) -> RunReport:
    opts = RunOptions(
        api_key="sk-or-v1-test", base_url=url, db_path=job.parent / "results.duckdb",
        handle_signals=False, quiet=True, jitter_seed=0, log=lines.append, **kw,
    )  # fmt: skip
    return await run_job_async(load_spec(job), opts)


@pytest.fixture
async def sim() -> Any:
    calls = _FirstCall()
    app = create_app(Scenario())
    app.middlewares.append(calls.note)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield calls, f"http://127.0.0.1:{port}/api/v1"
    await runner.cleanup()


def _gate_the_pass(monkeypatch: pytest.MonkeyPatch, calls: _FirstCall) -> list[bool]:
    """Hold the whole pass (`open_lookup`) until the simulator has had its first chat request,
    30 s at most: True for each pass the request let go, False for one the deadline did (a
    run that waits for its pass before sending)."""
    real, let_go = early.open_lookup, []  # type: ignore[attr-defined]

    def gated(*args: Any, **kwargs: Any) -> Any:
        let_go.append(calls.first.wait(timeout=30))
        return real(*args, **kwargs)

    monkeypatch.setattr(early, "open_lookup", gated)
    return let_go


def _statuses(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute("SELECT status, count(*) FROM results GROUP BY 1").fetchall())
    finally:
        con.close()


async def test_a_first_run_sends_before_its_pass_over_the_input_ends(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, url = sim
    monkeypatch.setattr(early, "HEAD_LINES", 8)
    records = texts(40)
    records[20]["id"] = records[3]["id"]  # a repeat after the head of one in it
    records[5]["id"] = records[1]["id"]  # a repeat within the head
    write_jsonl(tmp_path / "in.jsonl", records)
    job = write_job(tmp_path, limits={"concurrency": 4})
    let_go = _gate_the_pass(monkeypatch, calls)
    lines: list[str] = []
    report = await _run(job, url, lines)
    assert let_go == [True], "the first request waited for the whole pass"
    assert (report.counts.done, report.counts.duplicates) == (38, 2)
    assert calls.calls == 38  # each record once, no repeat sent
    assert _statuses(tmp_path / "results.duckdb") == {"done": 38}
    start = [line for line in lines if line.startswith(f"run {report.run_id}")]
    assert len(start) == 1, lines
    said = "this input: 40 records, 0 already final (skipped), 2 repeated ids, 38 to send"
    assert said in start[0]

    second = await _run(job, url, [])  # history now: the whole pass, as before
    assert (second.counts.skipped, second.counts.duplicates, calls.calls) == (38, 2, 38)


async def test_a_limit_reached_within_the_head_still_says_what_the_input_holds(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, url = sim
    monkeypatch.setattr(early, "HEAD_LINES", 8)
    write_jsonl(tmp_path / "in.jsonl", texts(30))
    job = write_job(tmp_path, limits={"concurrency": 2})
    let_go = _gate_the_pass(monkeypatch, calls)
    lines: list[str] = []
    report = await _run(job, url, lines, limit=3)
    assert let_go == [True]
    assert report.counts.done == calls.calls == 3
    said = "this input: 30 records, 0 already final (skipped), 0 repeated ids, 3+ to send"
    assert any(said in line for line in lines), lines
    spill = tmp_path / "results.duckdb.resume.tmp"
    assert not spill.exists()


async def test_a_small_first_run_makes_no_pass_beside_its_head(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input within the head is the whole input: no DuckDB pass is made at all."""
    calls, url = sim
    made: list[int] = []
    real = early.open_lookup  # type: ignore[attr-defined]

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(early, "open_lookup", counted)
    write_jsonl(tmp_path / "in.jsonl", texts(12))
    job = write_job(tmp_path)
    report = await _run(job, url, [])
    assert report.counts.done == calls.calls == 12
    assert made == []


async def test_a_first_run_that_fails_ends_and_closes_its_pass(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass behind the head waits for the feeder: a run stopped by a 401 still ends (a
    deadline turns a hang into a failure) and closes whatever pass it began."""
    calls, url = sim
    calls.deny = True
    monkeypatch.setattr(early, "HEAD_LINES", 8)
    write_jsonl(tmp_path / "in.jsonl", texts(40))
    job = write_job(tmp_path, limits={"concurrency": 2, "queue_size": 2})
    report = await asyncio.wait_for(_run(job, url, []), timeout=120)
    assert report.status is RunStatus.FAILED
    assert isinstance(report.error, AuthError)
    assert calls.calls >= 1
    spill = tmp_path / "results.duckdb.resume.tmp"
    assert not spill.exists()
