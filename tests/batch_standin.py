"""A stand-in for OpenRouter's Batch API (batch-api.md), independent of `batchroute.simulator`.

It serves `POST/GET /batches`, `GET /batches/{id}/results` (cursor pages), the chat endpoint
(for the synchronous fallback), `/models` and `/key`, and keeps its own bill: a batch item is
billed at half the catalogue price, a synchronous call at the full price. Failure modes are
fields; every answer follows the shapes in batch-api.md §§1-6.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from aiohttp import web

MODEL = "example/batchable"
PROMPT_PRICE = Decimal("0.000002")
COMPLETION_PRICE = Decimal("0.000008")
COMPLETION_TOKENS = 40
Q = Decimal("1e-12")
HALF = Decimal("0.5")


def _tokens(body: dict[str, Any]) -> int:
    return sum(len(m["content"].encode()) // 4 + 4 for m in body["messages"])


def _price(
    prompt: int, *, factor: Decimal = Decimal(1), completion: int = COMPLETION_TOKENS
) -> Decimal:
    cost = (prompt * PROMPT_PRICE + completion * COMPLETION_PRICE) * factor
    return cost.quantize(Q, ROUND_HALF_EVEN)


@dataclass
class BatchStandIn:
    """Failure modes: `fail_items` (custom_id → error message), `validation_error` (every
    batch fails after its 202), `expire` (how many batches, first ones, expire with only
    `expire_answered` items answered), `lag_404` (GETs of a new batch answered 404),
    `no_batch_endpoint` (the POST is refused with a 400), `per_item_cost` (items carry
    `usage.cost`), `polls_to_finish` (GETs before a batch is terminal), `malformed` (custom_ids
    whose result line has a string body)."""

    fail_items: dict[str, str] = field(default_factory=dict)
    validation_error: str | None = None
    expire: int = 0
    expire_answered: int = 0
    lag_404: int = 0
    no_batch_endpoint: bool = False
    per_item_cost: bool = False
    polls_to_finish: int = 1
    malformed: set[str] = field(default_factory=set)
    cut_items: set[str] = field(default_factory=set)  # answered with finish_reason "length"
    byok: bool | None = None  # BYOK batch usage; True: with the upstream cost, False: without
    byok_flag: bool = True  # False: the BYOK batch usage omits `is_byok` (older shapes)
    lose_202: int = 0  # this many POSTs create their batch, then never answer (a lost 202)
    expired_lines: bool = False  # unanswered items of an expired batch: an error line, not absent
    page_size: int = 100
    batch_usage: bool = True  # False: a finished batch's `usage` is null (the bill unreported)
    item_usage: bool = True  # False: result bodies carry no `usage` (a recorded Anthropic one)
    item_cost_factor: Decimal = Decimal(1)  # per-item usage.cost × this (≠ 1: they disagree)
    extra_usd: Decimal = Decimal(0)  # added to each item's bill: e.g. digits past 12 decimals
    gone: set[str] = field(default_factory=set)  # batch ids deleted by hand: 404 forever
    refuse: set[str] = field(default_factory=set)  # model ids answered "no :batch endpoint"
    list_variant: bool = False  # /models lists MODEL:batch (at half price) beside MODEL
    hide_expired: bool = False  # an expired batch serves no result lines (billed all the same)
    post_error: tuple[int, str] | None = None  # every POST answered with this error
    key_remaining: Decimal | None = None  # GET /key's limit_remaining (batches in flight unbilled)
    expired_tokens: int = COMPLETION_TOKENS  # completion tokens of an item an expired batch ran
    unlabelled: set[str] = field(default_factory=set)  # answered (billed), line without custom_id
    item_factor: Decimal = HALF  # a batch item's bill × the catalogue price (above 1: dearer)
    completion_tokens: int = COMPLETION_TOKENS  # what each item that runs generates
    generations: dict[str, dict[str, Any]] = field(default_factory=dict)  # GET /generation
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    billed: list[Decimal] = field(default_factory=list)
    sync_calls: int = 0
    posts: list[bytes] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def total(self) -> Decimal:
        return sum(self.billed, Decimal(0))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=50 * 2**20)
        app.router.add_post("/api/v1/chat/completions", self.chat)
        app.router.add_get("/api/v1/models", self.models)
        app.router.add_get("/api/v1/key", self.key)
        app.router.add_post("/api/v1/batches", self.create)
        app.router.add_get("/api/v1/batches", self.list)
        app.router.add_get("/api/v1/batches/{id}", self.get)
        app.router.add_get("/api/v1/batches/{id}/results", self.results)
        app.router.add_get("/api/v1/generation", self.generation)
        return app

    async def generation(self, request: web.Request) -> web.Response:
        """GET /generation of a batch item's answer: its own bill (the fee and, under BYOK,
        the provider's charge to the user's key), as openrouter-api.md §4.2 shapes it."""
        data = self.generations.get(request.query.get("id", ""))
        if data is None:
            return _error(404, "Generation not found")
        return web.json_response({"data": data})

    async def models(self, _: web.Request) -> web.Response:
        model = {
            "id": MODEL,
            "context_length": 128_000,
            "pricing": {"prompt": str(PROMPT_PRICE), "completion": str(COMPLETION_PRICE)},
            "top_provider": {"context_length": 128_000, "max_completion_tokens": 16_384},
            "supported_parameters": ["max_tokens"],
        }
        data = [model]
        if self.list_variant:
            half = {"prompt": str(PROMPT_PRICE * HALF), "completion": str(COMPLETION_PRICE * HALF)}
            data.append({**model, "id": f"{MODEL}:batch", "pricing": half})
        return web.json_response({"data": data})

    async def key(self, _: web.Request) -> web.Response:
        left = None if self.key_remaining is None else str(self.key_remaining)
        return web.json_response({"data": {"limit": left, "limit_remaining": left}})

    async def chat(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.sync_calls += 1
        prompt = _tokens(body)
        cost = _price(prompt)
        self.billed.append(cost)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": prompt + COMPLETION_TOKENS,
            "cost": float(cost),
        }
        return web.json_response(
            {
                "id": f"gen-sync-{self.sync_calls}",
                "model": body["model"],
                "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hola"}}],
            }
        )

    async def create(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.posts.append(raw)
        # The server stream-parses: endpoint and model must come before requests.
        if raw.find(b'"requests"') < max(raw.find(b'"endpoint"'), raw.find(b'"model"')):
            return _error(400, "endpoint and model must appear before requests")
        body = orjson.loads(raw)
        model = body["model"]
        if self.post_error is not None:
            return _error(*self.post_error)
        if self.no_batch_endpoint or model in self.refuse:
            return _error(400, f"Model '{model}' does not have a :batch endpoint.")
        ids = [r["custom_id"] for r in body["requests"]]
        if len(set(ids)) != len(ids):
            return _error(422, "Request at line 2 has a duplicate custom_id")
        bid = f"batch-{next(self._ids):04d}"
        self.batches[bid] = {"body": body, "gets": 0, "n": len(self.batches)}
        if self.lose_202 > 0:
            self.lose_202 -= 1
            await asyncio.sleep(30)  # longer than the client waits: it never sees the id
        return web.json_response(self._object(bid, "validating"), status=202)

    def _object(self, bid: str, status: str) -> dict[str, Any]:
        b = self.batches[bid]
        total = len(b["body"]["requests"])
        lines = b.get("lines", [])  # once run: what it answered, what failed (batch-api §5)
        done = [ln for ln in lines if ln.get("response") is not None and not ln.get("error")]
        failed = sum(1 for ln in lines if ln.get("error"))
        return {
            "id": bid,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "model": b["body"]["model"],
            "completion_window": "24h",
            "status": status,
            "created_at": 1,
            "finalized_at": None,
            "request_counts": {"total": total, "completed": len(done), "failed": failed},
            "usage": b.get("usage"),
            "results": None,
            "error": {"message": self.validation_error} if status == "failed" else None,
        }

    async def list(self, _: web.Request) -> web.Response:
        shown = [bid for bid in reversed(self.batches) if bid not in self.gone]  # deleted
        data = [self._object(bid, self._advance(bid)) for bid in shown]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    def _advance(self, bid: str) -> str:
        """A listed batch moves on as a polled one does (time passes whoever looks)."""
        b = self.batches[bid]
        b["gets"] += 1
        if b["gets"] - self.lag_404 < self.polls_to_finish:
            return "in_progress"
        return self._finish(bid)

    def _finish(self, bid: str) -> str:
        """Run the batch once: bill its answered items at half price."""
        b = self.batches[bid]
        if "status" in b:
            return str(b["status"])
        if self.validation_error is not None:
            b["status"], b["lines"] = "failed", []
            return "failed"
        reqs = b["body"]["requests"]
        expired = b["n"] < self.expire
        lines, cost, fees = [], Decimal(0), Decimal(0)
        if expired:
            if self.expired_lines:
                err = {
                    "message": "Batch expired before this request was processed.",
                    "type": "batch_expired",
                }
                lines += [
                    {"custom_id": r["custom_id"], "response": None, "error": err}
                    for r in reqs[self.expire_answered :]
                ]
            reqs = reqs[: self.expire_answered]
        completion = self.expired_tokens if expired else self.completion_tokens
        for r in reqs:
            cid = r["custom_id"]
            if cid in self.fail_items:
                lines.append(
                    {
                        "id": f"req-{cid}",
                        "custom_id": cid,
                        "response": None,
                        "error": {"message": self.fail_items[cid], "type": "server_error"},
                    }
                )
                continue
            if cid in self.malformed:
                lines.append(
                    {
                        "custom_id": cid,
                        "response": {"status_code": 400, "body": "bad"},
                        "error": None,
                    }
                )
                continue
            prompt = _tokens(r["body"])
            item = _price(prompt, factor=self.item_factor, completion=completion) + self.extra_usd
            cost += item
            usage: dict[str, Any] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
            }
            if self.per_item_cost:
                usage["cost"] = str((item * self.item_cost_factor).quantize(Q))
            body = {
                "id": f"gen-batch-{cid}",
                "object": "chat.completion",
                "model": b["body"]["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "length" if cid in self.cut_items else "stop",
                        "message": {"role": "assistant", "content": "hola"},
                    }
                ],
                **({"usage": usage} if self.item_usage else {}),
            }
            fees += self._generation(str(body["id"]), item)
            lines.append(
                {
                    "id": f"req-{cid}",
                    **({} if cid in self.unlabelled else {"custom_id": cid}),
                    "response": {"status_code": 200, "request_id": None, "body": body},
                    "error": None,
                }
            )
        lines.reverse()  # order is not guaranteed: the client must key on custom_id
        self.billed.append(cost)
        b["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "cost": str(cost)}
        if self.byok is not None:  # the provider bills the user's key; the balance, a fee
            self.billed[-1] = fees + cost
            b["usage"] = {"cost": str(fees), **({"is_byok": True} if self.byok_flag else {})}
            if self.byok:
                b["usage"]["cost_details"] = {"upstream_inference_cost": str(cost)}
        if not self.batch_usage:
            b["usage"] = None
        b["lines"], b["status"] = lines, "expired" if expired else "completed"
        return str(b["status"])

    def _generation(self, gid: str, item: Decimal) -> Decimal:
        """Record what GET /generation says of an answer billed `item`; its BYOK fee."""
        fee = (item * Decimal("0.05")).quantize(Q, ROUND_HALF_EVEN)
        self.generations[gid] = (
            {"id": gid, "total_cost": str(item), "is_byok": False}
            if self.byok is None
            else {
                "id": gid, "total_cost": str(fee), "is_byok": True,
                "upstream_inference_cost": str(item),
            }
        )  # fmt: skip
        return fee

    async def get(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        b = self.batches.get(bid)
        if b is None or bid in self.gone:
            return _error(404, f"Batch job {bid} not found.")
        b["gets"] += 1
        if b["gets"] <= self.lag_404:
            return _error(404, f"Batch job {bid} not found.")
        if b["gets"] - self.lag_404 < self.polls_to_finish:
            return web.json_response(self._object(bid, "in_progress"))
        obj = self._object(bid, self._finish(bid))
        hidden = b["status"] == "failed" or (self.hide_expired and b["status"] == "expired")
        obj["results"] = None if hidden else b["lines"]
        return web.json_response(obj)

    async def results(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None or "lines" not in b or (self.hide_expired and b["status"] == "expired"):
            return _error(404, "not found")
        start = int(request.query.get("cursor", "0"))
        page = b["lines"][start : start + self.page_size]
        more = start + self.page_size < len(b["lines"])
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "has_more": more,
                "next_cursor": str(start + self.page_size) if more else None,
            }
        )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message}}, status=status)
