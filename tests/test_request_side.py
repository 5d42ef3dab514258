"""The request/answer side's per-record work (issue 11, cpu5a): what it may skip, and what it
must still do. Real loopback servers; nothing mocked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from factories import make_spec

from batchroute.budget import Budget
from batchroute.client import OpenRouterClient
from batchroute.client.parse import parse_completion
from batchroute.errors import RetryableError, UpstreamError
from batchroute.plan import classification
from batchroute.types import CallSeen, Classification, Record

KEY = "sk-or-v1-REQUESTSIDE-0123456789"
GID = "gen-1780000000-REQUESTSIDE000001"
ANSWER = {
    "id": GID,
    "model": "openai/gpt-4o-mini",
    "provider": "OpenAI",
    "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "cost": 0.0000148,
        "cost_details": {"upstream_inference_cost": 0.0000148},
    },
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[tuple[Callable[[Handler], Awaitable[str]], asyncio.Event]]:
    servers: list[TestServer] = []
    hold = asyncio.Event()

    async def make(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/api/v1"))

    yield make, hold
    hold.set()
    for server in servers:
        await server.close()


async def test_an_answer_that_came_with_its_headers_tells_no_id_before_it_lands(
    serve: tuple[Callable[[Handler], Awaitable[str]], asyncio.Event],
) -> None:
    """A body that arrived with its headers is read without yielding to the loop: no
    cancellation can come between the headers and the answer, so the client does not hand
    the id to the caller's handle (which costs the run a loop callback a call); the answer
    carries it. On b5d2829 the handle got it on every call."""

    async def whole(request: web.Request) -> web.StreamResponse:
        return web.json_response(ANSWER, headers={"X-Generation-Id": GID})

    make, _ = serve
    url = await make(whole)
    seen = CallSeen()
    async with OpenRouterClient(url, KEY) as client:
        c = await client.complete({"model": "m", "messages": []}, seen=seen)
    assert c.generation_id == GID
    assert c.usage.cost == Decimal("0.000014800000")
    assert seen.generation_id is None


async def test_a_body_still_to_come_tells_the_id_at_the_headers(
    serve: tuple[Callable[[Handler], Awaitable[str]], asyncio.Event],
) -> None:
    """The other side of the test above: headers first, the body held back; the handle has
    the id while the call waits, so a cancelled call can be asked about at /generation."""
    make, hold = serve

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"X-Generation-Id": GID})
        resp.content_type = "application/json"
        await resp.prepare(request)
        await hold.wait()
        await resp.write(orjson.dumps(ANSWER))
        return resp

    url = await make(slow)
    seen = CallSeen()
    async with OpenRouterClient(url, KEY, timeout_s=60) as client:
        call = asyncio.ensure_future(client.complete({"model": "m", "messages": []}, seen=seen))
        deadline = asyncio.get_running_loop().time() + 30
        while seen.generation_id is None and not call.done():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.005)
        assert seen.generation_id == GID
        hold.set()
        c = await call
    assert c.generation_id == GID


def _body(**over: Any) -> bytes:
    return orjson.dumps({**ANSWER, **over})


def test_an_error_in_a_later_choice_is_the_answer_s_error() -> None:
    """§2.3, as before the loop replaced the list: the first failing choice's error, with the
    usage's cost kept on it."""
    choices = [
        {"finish_reason": "stop", "message": {"content": "ok"}},
        {"finish_reason": "error", "error": {"code": 502, "message": "provider down"}},
    ]
    with pytest.raises(UpstreamError) as info:
        parse_completion(_body(choices=choices), 200, {}, model="m")
    assert info.value.generation_id == GID
    assert info.value.cost == Decimal("0.000014800000")


def test_a_top_level_error_wins_over_a_choice_s() -> None:
    top = {"code": 429, "message": "slow down"}
    choices = [{"finish_reason": "error", "error": {"code": 502, "message": "provider down"}}]
    with pytest.raises(UpstreamError) as info:
        parse_completion(_body(error=top, choices=choices), 200, {}, model="m")
    assert "slow down" in str(info.value)


def test_a_choice_that_is_no_object_is_malformed_even_after_an_error() -> None:
    """Every choice is looked at, as the list comprehension did."""
    choices = [{"finish_reason": "error", "error": {"code": 502, "message": "x"}}, "junk"]
    with pytest.raises(RetryableError) as info:
        parse_completion(_body(choices=choices), 200, {}, model="m")
    assert info.value.error_type == "malformed_response"


@pytest.mark.parametrize("raw", [0.0000148, 1e-13, 3, "0.00001", 0.1 + 0.2])
def test_a_cost_is_read_exactly_and_rounded_up(raw: Any) -> None:
    """The float fast path reads the cost as `_cost` does: the decimal the server wrote,
    rounded up to 12 places (never below the bill)."""
    usage = {**ANSWER["usage"], "cost": raw, "cost_details": None}  # type: ignore[dict-item]
    c = parse_completion(_body(usage=usage), 200, {}, model="m")
    want = Decimal(repr(raw) if isinstance(raw, float) else raw)
    assert c.usage.cost is not None
    assert c.usage.cost >= want
    assert c.usage.cost - want < Decimal("1e-12")
    assert c.usage.cost == c.usage.cost.quantize(Decimal("1e-12"))


def test_a_given_task_s_verdict_is_one_object_per_task(tmp_path: Path) -> None:
    """A job's `task` (or a record's task field) decides alone: its verdict is the same for
    every record, so one frozen object serves them all, equal to the one built before."""
    spec = make_spec(tmp_path)  # task: translation
    a = classification(spec, Record(1, "a", {"text": "x"}), [{"role": "user", "content": "x"}])
    b = classification(spec, Record(2, "b", {"text": "y"}), [{"role": "user", "content": "y"}])
    assert a == (Classification("translation", "medium", "job.task"), True)
    assert a[0] is b[0]
    spec = make_spec(tmp_path, task=None, task_field="kind")
    rec = Record(3, "c", {"kind": "code_review"})
    c = classification(spec, rec, [{"role": "user", "content": "z"}])
    assert c == (Classification("code_review", "medium", "task_field"), True)


def test_a_reservation_still_stops_at_the_limit() -> None:
    """`try_reserve` with `fits`/`limit` inlined: the ceiling (the key's remaining) and the
    cap both bound it, to the last digit; a negative amount is refused."""
    b = Budget(Decimal("1.00"), spent=Decimal("0.40"))
    assert b.try_reserve(Decimal("0.60")) is not None
    assert b.try_reserve(Decimal("0.000000000001")) is None
    b = Budget(Decimal("1.00"))
    b.lower_ceiling(Decimal("0.30"))
    assert b.try_reserve(Decimal("0.300000000001")) is None
    assert b.try_reserve(Decimal("0.30")) is not None
    with pytest.raises(ValueError, match="negative"):
        b.try_reserve(Decimal("-0.01"))


@pytest.mark.parametrize(
    "fields",
    [
        {"text": "héllo {x}", "target_lang": "French"},  # all text: formatted from the record
        {"text": 5, "target_lang": "French"},  # a number: as JSON, by the general path
        {"text": None, "target_lang": True},
        {"text": ["a", {"b": 1}], "target_lang": "French"},
    ],
)
def test_a_record_renders_as_the_general_path_renders_it(fields: dict[str, Any]) -> None:
    from batchroute.prompt import _Fields, render_messages
    from batchroute.spec import PromptSpec

    p = PromptSpec(system="You translate {{literally}}.", user="Into {target_lang}: {text}")
    general = [
        {"role": "system", "content": p.system.format_map(_Fields(fields))},  # type: ignore[union-attr]
        {"role": "user", "content": p.user.format_map(_Fields(fields))},
    ]
    assert render_messages(p, fields) == general


def test_a_missing_field_is_still_named() -> None:
    from batchroute.errors import InputError
    from batchroute.prompt import render_messages
    from batchroute.spec import PromptSpec

    with pytest.raises(InputError, match="target_lang"):
        render_messages(PromptSpec(user="Into {target_lang}: {text}"), {"text": "x"})
