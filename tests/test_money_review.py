"""Hostile review of issue 8: ways the database says less than the bill, or a run breaks.

Every test uses a real loopback server that bills like OpenRouter (a generation is billed when it
runs) and a real DuckDB file; each checks the rule: DuckDB's spend ≥ what the server billed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import yaml
from aiohttp import web
from factories import job_dict, texts, write_jsonl

from batchroute.budget import Budget
from batchroute.runner import RunOptions, run_job_async
from batchroute.spec import JobSpec, load_spec

MODEL = "example/model"
PROMPT_PRICE = Decimal("0.0000015")
COMPLETION_PRICE = Decimal("0.000006")
SEARCH_PRICE = Decimal("0.02")  # the web plugin's 5 results at $0.004
BYOK_FEE = Decimal("0.05")
Q = Decimal("1e-12")

Chat = Callable[["Server", web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


class Server:
    """A minimal OpenRouter whose chat behaviour each test supplies."""

    def __init__(self, chat: Chat, *, key_remaining: Any = None) -> None:
        self._chat = chat
        self.billed: list[Decimal] = []
        self.generations: dict[str, dict[str, Any]] = {}
        self.generation_known = True
        self.key_remaining = key_remaining
        self.release = asyncio.Event()

    @property
    def total(self) -> Decimal:
        return sum(self.billed, Decimal(0))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", self.chat)
        app.router.add_get("/api/v1/models", self.models)
        app.router.add_get("/api/v1/generation", self.generation)
        app.router.add_get("/api/v1/key", self.key)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(self, request, orjson.loads(await request.read()))

    async def models(self, _: web.Request) -> web.Response:
        base = {
            "context_length": 128_000,
            "pricing": {"prompt": str(PROMPT_PRICE), "completion": str(COMPLETION_PRICE)},
            "top_provider": {"context_length": 128_000, "max_completion_tokens": 16_384},
            "supported_parameters": ["max_tokens"],
        }
        return web.json_response({"data": [{"id": MODEL, **base}]})

    async def key(self, _: web.Request) -> web.Response:
        return web.json_response({"data": {"limit_remaining": self.key_remaining}})

    async def generation(self, request: web.Request) -> web.Response:
        gen = self.generations.get(request.query.get("id", ""))
        if gen is None or not self.generation_known:
            return web.json_response({"error": {"code": 404, "message": "not found"}}, status=404)
        return web.json_response({"data": gen})

    def bill(self, amount: Decimal, *, total_cost: Any = None) -> str:
        """Bill a generation now; /generation will report `total_cost` (default: amount)."""
        gid = f"gen-{len(self.generations) + 1:06d}"
        self.billed.append(amount)
        self.generations[gid] = {
            "id": gid,
            "total_cost": float(amount) if total_cost is None else total_cost,
            "upstream_inference_cost": float(amount),
            "is_byok": False,
        }
        return gid


def token_price(body: dict[str, Any], completion_tokens: int = 200) -> tuple[int, Decimal]:
    prompt_tokens = sum(len(m["content"].encode()) // 4 + 4 for m in body["messages"])
    cost = prompt_tokens * PROMPT_PRICE + completion_tokens * COMPLETION_PRICE
    return prompt_tokens, cost.quantize(Q, ROUND_HALF_EVEN)


async def _no_sleep(_s: float) -> None:
    return None


def _spec(
    tmp_path: Path,
    records: list[dict[str, Any]],
    *,
    model: str = MODEL,
    stream: bool = False,
    cap: str = "1",
    **limits: Any,
) -> JobSpec:
    write_jsonl(tmp_path / "in.jsonl", records)
    job = job_dict(
        tmp_path,
        quality=[],
        budget={"daily_usd": cap},
        limits={"concurrency": 8, "timeout_s": 0.3, "idle_timeout_s": 0.3, "max_attempts": 1,
                "reconcile_wait_s": 5, **limits},
    )  # fmt: skip
    job["tiers"] = {"premium": {"models": [model], "stream": stream}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return load_spec(path)


def _opts(base_url: str, db: Path) -> RunOptions:
    return RunOptions(
        api_key="sk-or-v1-test",
        base_url=base_url,
        db_path=db,
        handle_signals=False,
        quiet=True,
        sleep=_no_sleep,
        jitter_seed=0,
        log=lambda _line: None,
    )


def _q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _spent(db: Path) -> Decimal:
    return Decimal(_q(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts")[0][0])


# ------------------------------------------------------------------ 1. errors inside a 200
@pytest.mark.parametrize("stream", [False, True])
async def test_error_inside_a_200_with_a_search_fee_is_not_booked_at_zero(
    tmp_path: Path, serve: Any, stream: bool
) -> None:
    """An `:online` call fails inside a 200 (§2.3), no usage. Zero-completion insurance waives the
    tokens, but the web search is still billed (§2.6). README: 'an error inside a 200' is booked
    at the reservation. The code books it at $0, cost_source 'none'."""

    async def chat(s: Server, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        gid = s.bill(SEARCH_PRICE)  # tokens insured, the search is not
        err = {"code": 502, "message": "Provider returned error",
               "metadata": {"error_type": "provider_unavailable"}}  # fmt: skip
        if not body.get("stream"):
            return web.json_response({"id": gid, "error": err}, headers={"X-Generation-Id": gid})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = {"id": gid, "model": MODEL, "choices": [{"index": 0, "delta": {"content": "Bon"}}]}
        await resp.write(b"data: " + orjson.dumps(first) + b"\n\n")
        last = {
            "id": gid,
            "error": err,
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
        await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")  # fmt: skip
        return resp

    server = Server(chat)
    server.generation_known = False  # /generation slow to answer: only the booking counts
    # An `:online` call reserves the model's whole context (the results it injects): $0.2 here
    spec = _spec(tmp_path, texts(20), model=MODEL + ":online", stream=stream, cap="0.6")
    db = tmp_path / "r.duckdb"
    await run_job_async(spec, _opts(await serve(server), db))
    sources = dict(_q(db, "SELECT cost_source, count(*) FROM attempts GROUP BY 1"))
    assert server.billed
    assert server.total <= Decimal("0.6"), (server.total, sources)
    assert _spent(db) >= server.total, (_spent(db), server.total, sources)


# ------------------------------------------------- 2. token counts without a cost (catalog)
@pytest.mark.parametrize("kind", ["online", "byok"])
async def test_answer_with_tokens_but_no_cost_is_not_booked_below_the_bill(
    tmp_path: Path, serve: Any, kind: str
) -> None:
    """`usage` has token counts but no `cost` (older API behaviour, pitfall 9). The catalog path
    books tokens × price only: the `:online` search fee, known from the request, and the BYOK
    fee (which the reservation itself says cannot be ruled out) are dropped."""

    async def chat(s: Server, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        pt, cost = token_price(body)
        billed = cost + SEARCH_PRICE if kind == "online" else cost * (1 + BYOK_FEE)
        gid = s.bill(billed.quantize(Q))
        usage = {"prompt_tokens": pt, "completion_tokens": 200, "total_tokens": pt + 200}
        answer = {"id": gid, "model": body["model"], "usage": usage,
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"content": "bonjour"}}]}  # fmt: skip
        return web.json_response(answer, headers={"X-Generation-Id": gid})

    server = Server(chat)
    model = MODEL + (":online" if kind == "online" else "")
    cap = "0.6" if kind == "online" else "0.05"  # `:online` reserves the whole context
    spec = _spec(tmp_path, texts(20), model=model, cap=cap)
    db = tmp_path / "r.duckdb"
    await run_job_async(spec, _opts(await serve(server), db))
    assert server.billed
    assert server.total <= Decimal(cap), server.total
    assert _spent(db) >= server.total, (_spent(db), server.total)


# ------------------------------------------------- 3. duplicate ids: fixes hit the wrong row
async def test_duplicate_ids_are_not_paid_twice_nor_fixed_twice(tmp_path: Path, serve: Any) -> None:
    """Found in review: with duplicate ids both attempts were keyed alike, and one
    /generation fix landed on both. Duplicates are now skipped (issue 9): one call, one fix."""
    """Two input lines with the same id (documented: each is processed and paid for) time out
    in a stream (ids known). Both attempts are (run_id, key, attempt_no=1): the first
    /generation fix rewrites both rows to its own cost; the second finds nothing left."""

    async def chat(s: Server, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        _, cost = token_price(body)
        gid = s.bill(cost)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = {"id": gid, "model": MODEL, "choices": [{"index": 0, "delta": {}}]}
        await resp.write(b"data: " + orjson.dumps(first) + b"\n\n")
        with contextlib.suppress(TimeoutError):  # think past the idle timeout
            await asyncio.wait_for(s.release.wait(), 30)
        return resp

    short = {"id": "dup", "text": "Hi.", "target_lang": "French"}
    long_ = {
        "id": "dup",
        "text": "A much longer sentence to translate. " * 200,
        "target_lang": "French",
    }
    server = Server(chat)
    spec = _spec(tmp_path, [short, long_], stream=True, concurrency=1)
    db = tmp_path / "r.duckdb"
    await run_job_async(spec, _opts(await serve(server), db))
    rows = _q(db, "SELECT attempt_no, cost_source, cost_usd FROM attempts ORDER BY 1")
    assert len(server.billed) == 1
    assert _q(db, "SELECT records_duplicate FROM runs") == [(1,)]
    assert _spent(db) >= server.total, (rows, server.billed)


# ---------------------------------- 4. an absurd /generation figure stops every later run
async def test_absurd_generation_cost_does_not_crash_the_next_run(
    tmp_path: Path, serve: Any
) -> None:
    """Run 1 times out in a stream while /generation does not know the id yet. By run 2,
    /generation reports an absurd total_cost (1e30). `real_cost` only checks finite and ≥ 0;
    quantize raises InvalidOperation and `_reconcile_earlier` crashes every later run at start."""

    async def chat(s: Server, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        _, cost = token_price(body)
        gid = s.bill(cost, total_cost=1e30)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = {"id": gid, "model": MODEL, "choices": [{"index": 0, "delta": {}}]}
        await resp.write(b"data: " + orjson.dumps(first) + b"\n\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.release.wait(), 30)
        return resp

    server = Server(chat)
    server.generation_known = False
    spec = _spec(tmp_path, texts(3), stream=True, reconcile_wait_s=0)
    db = tmp_path / "r.duckdb"
    base = await serve(server)
    await run_job_async(spec, _opts(base, db))
    assert _q(db, "SELECT count(*) FROM attempts WHERE cost_source = 'reserved'")[0][0] == 3
    server.generation_known = True
    report = await run_job_async(spec, _opts(base, db))  # raises decimal.InvalidOperation
    assert report is not None


# ------------------------------------------ 5. a BYOK answer whose cost is sNaN crashes the run
async def test_byok_answer_with_snan_cost_is_booked_not_crashed(tmp_path: Path, serve: Any) -> None:
    """usage.cost "sNaN" with is_byok: `Usage.billed` adds it to upstream → InvalidOperation in
    `_completion_cost`, outside `_call`'s except clauses: the reservation is never settled and
    the run dies with a traceback. The streamed path (`_Stream.billed`) guards against exactly
    this; the dispatcher does not. Issue 8: a NaN cost is 'a clear attempt error'."""

    async def chat(s: Server, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        pt, cost = token_price(body)
        gid = s.bill(cost * (1 + BYOK_FEE))
        usage = {"prompt_tokens": pt, "completion_tokens": 200, "cost": "sNaN", "is_byok": True,
                 "cost_details": {"upstream_inference_cost": float(cost)}}  # fmt: skip
        answer = {"id": gid, "model": body["model"], "usage": usage,
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"content": "bonjour"}}]}  # fmt: skip
        return web.json_response(answer, headers={"X-Generation-Id": gid})

    server = Server(chat)
    server.generation_known = False
    spec = _spec(tmp_path, texts(1))
    db = tmp_path / "r.duckdb"
    crash: BaseException | None = None
    try:
        await run_job_async(spec, _opts(await serve(server), db))
    except Exception as exc:  # shown in the assertion
        crash = exc
    assert _spent(db) >= server.total, (_spent(db), server.total, repr(crash))
    assert crash is None, repr(crash)


# ------------------------------------------------------- 6. key guard after reconciliation
def test_key_ceiling_is_not_raised_by_a_later_correction() -> None:
    """The key's `limit_remaining` is read while a timed-out call is booked at its worst case
    ($0.04) though it was billed $0.01. `lower_ceiling` fixes spent + remaining as the ceiling;
    when /generation later corrects the booking to $0.01, the run may spend $0.03 more than the
    key has left."""
    b = Budget(Decimal("1"))
    b.lower_ceiling(Decimal("0.10"))  # start: the key has $0.10 left
    r = b.try_reserve(Decimal("0.04"))
    assert r is not None
    b.settle(r, Decimal("0.04"))  # timed out: booked at the reservation; really billed $0.01
    # another host sharing the key spends $0.05: the key now has 0.10 - 0.01 - 0.05 = 0.04 left
    b.lower_ceiling(Decimal("0.04"))
    b.correct(Decimal("0.04"), Decimal("0.01"))  # /generation: it cost $0.01
    key_left = Decimal("0.04")
    assert b.remaining <= key_left, (b.remaining, key_left)


# ---------------------------------------- 7. keep-alive comments defeat the idle timeout
async def test_a_stream_of_keepalive_comments_does_not_hold_a_reservation_forever(
    tmp_path: Path, serve: Any
) -> None:
    """OpenRouter sends `: OPENROUTER PROCESSING` while the provider works. A provider that
    hangs behind it sends no token ever, but the comments re-arm sock_read: a streamed call has
    no total bound at all (timeout_s is not applied), so the run never ends."""

    async def chat(s: Server, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(300):  # 30 s of keep-alives
            await resp.write(b": OPENROUTER PROCESSING\n\n")
            if s.release.is_set():
                break
            await asyncio.sleep(0.1)
        return resp

    server = Server(chat)
    spec = _spec(tmp_path, texts(2), stream=True, timeout_s=1, idle_timeout_s=0.5, stream_max_s=2)
    db = tmp_path / "r.duckdb"
    base = await serve(server)
    await asyncio.wait_for(run_job_async(spec, _opts(base, db)), timeout=10)
