"""OpenRouterClient streaming (`stream=True`) and the usage/cost fields, on real loopback servers.

The simulator covers the normal stream and its mid-stream faults; small aiohttp apps defined
here give exact byte control (keep-alive comments, CRLF, an empty-delta usage chunk, BYOK, a
stream that goes silent or is cut). Nothing is mocked and no test sleeps to wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import FakeClock, SimClientFactory

from batchroute.client import OpenRouterClient
from batchroute.errors import (
    CreditsExhausted,
    RateLimited,
    RejectedError,
    RetryableError,
    UpstreamError,
)
from batchroute.simulator import Scenario
from batchroute.types import CallSeen, GenerationCost, Usage

KEY = "sk-or-v1-TOPSECRET-stream"
MODEL = "openai/gpt-4o-mini"
GID = "gen-1780000000-STREAMSTREAMSTREAM01"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ServeFactory = Callable[[Handler], Awaitable[str]]
HOLD = web.AppKey("hold", asyncio.Event)


def payload() -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Translate into French: hello"}],
        "max_tokens": 1000,
    }


def scripted(*steps: str | dict[str, Any]) -> Scenario:
    return Scenario.from_dict({"script": {"*": list(steps)}})


def sse(obj: dict[str, Any], eol: bytes = b"\n") -> bytes:
    return b"data: " + orjson.dumps(obj) + eol + eol


def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": GID,
        "provider": "OpenAI",
        "model": MODEL,
        "object": "chat.completion.chunk",
        "choices": choices,
        **extra,
    }


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "index": 0,
        "delta": {"content": text},
        "finish_reason": finish,
        "native_finish_reason": finish,
    }


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "cost": 0.000123, "is_byok": False}
BYOK_USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 9,
    "cost": 0.0000015,
    "is_byok": True,
    "cost_details": {"upstream_inference_cost": 0.00003},
    "completion_tokens_details": {"reasoning_tokens": 5},
    "server_tool_use": {"web_search_requests": 1},
}
OK_EVENTS = [
    b": OPENROUTER PROCESSING\n\n",
    sse(chunk([delta("Bon")])),
    sse(chunk([delta("jour")])),
    sse(chunk([delta("", "stop")])),
    sse(chunk([], usage=USAGE)),
    b"data: [DONE]\n\n",
]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFactory]:
    """Factory: serve one handler on POST /api/v1/chat/completions (and GET /generation)
    on 127.0.0.1; returns the base URL. A `hold` event lets handlers stall; it is set only
    at teardown so their servers can close."""
    servers: list[TestServer] = []
    hold = asyncio.Event()

    async def make(handler: Handler) -> str:
        app = web.Application()
        app[HOLD] = hold
        app.router.add_post("/api/v1/chat/completions", handler)
        app.router.add_get("/api/v1/generation", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/api/v1"))

    yield make
    hold.set()
    for server in servers:
        await server.close()


def streamer(
    *parts: bytes, header_gid: bool = True, end: str = "eof", status: int = 200
) -> Handler:
    """A handler that writes `parts` one write each, then ends: "eof" (clean), "abort"
    (connection reset) or "hold" (silence until teardown)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream"}
        if header_gid:
            headers["X-Generation-Id"] = GID
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        for part in parts:
            await resp.write(part)
        if end == "abort":
            assert request.transport is not None
            request.transport.abort()
        elif end == "hold":
            await request.app[HOLD].wait()
        else:
            await resp.write_eof()
        return resp

    return handler


async def stream_call(url: str, *, idle_timeout_s: float | None = 5) -> Any:
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        return await client.complete(payload(), stream=True, idle_timeout_s=idle_timeout_s)


async def stream_error(url: str, *, idle_timeout_s: float = 5) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await stream_call(url, idle_timeout_s=idle_timeout_s)
    assert KEY not in str(info.value)
    return info.value


# --- against the simulator ---------------------------------------------------------------------


async def test_simulator_stream_matches_the_ledger(sim_client: SimClientFactory) -> None:
    sim = await sim_client()
    url = str(sim.make_url("/api/v1"))
    body = payload()
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        c = await client.complete(body, stream=True)
    assert "stream" not in body  # the caller's payload is not touched
    assert c.content is not None
    assert c.content.startswith(f"[sim {MODEL}] ")
    assert (c.finish_reason, c.model, c.provider) == ("stop", MODEL, "OpenAI")
    assert c.usage.present
    assert c.usage.prompt_tokens > 0
    assert c.usage.completion_tokens > 0
    ledger = await (await sim.get("/sim/ledger")).json()
    gen = ledger["generations"][0]
    assert gen["delivered"] is True
    assert c.generation_id == gen["id"]
    assert c.usage.cost == Decimal(gen["cost_usd"]) > 0
    assert c.usage.billed == c.usage.cost


async def test_simulator_stream_and_plain_answers_agree(sim_client: SimClientFactory) -> None:
    streamed_sim, plain_sim = await sim_client(seed=3), await sim_client(seed=3)
    async with OpenRouterClient(str(streamed_sim.make_url("/api/v1")), KEY) as client:
        streamed = await client.complete(payload(), stream=True)
    async with OpenRouterClient(str(plain_sim.make_url("/api/v1")), KEY) as client:
        plain = await client.complete(payload())
    assert streamed.content == plain.content
    assert streamed.usage == plain.usage
    assert streamed.finish_reason == plain.finish_reason


async def test_simulator_mid_stream_error_chunk(sim_client: SimClientFactory) -> None:
    url = str((await sim_client(scripted("200_error"))).make_url("/api/v1"))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.status == 502  # from error.code, not the 200 of the status line
    assert err.error_type == "provider_unavailable"
    assert err.generation_id is not None
    assert err.generation_id.startswith("gen-")


async def test_simulator_malformed_stream(sim_client: SimClientFactory) -> None:
    url = str((await sim_client(scripted("malformed"))).make_url("/api/v1"))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.error_type == "malformed_response"
    assert err.generation_id is not None


async def test_simulator_reset_mid_stream(sim_client: SimClientFactory) -> None:
    url = str((await sim_client(scripted("reset"))).make_url("/api/v1"))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.error_type == "connection"
    assert err.status == 0
    assert err.generation_id is not None


async def test_simulator_refusal_before_the_stream(sim_client: SimClientFactory) -> None:
    url = str(
        (await sim_client(scripted({"fault": "429", "retry_after_s": 7}))).make_url("/api/v1")
    )
    err = await stream_error(url)
    assert type(err) is RateLimited
    assert (err.status, err.retry_after) == (429, 7.0)


# --- exact bytes ------------------------------------------------------------------------------


async def test_keepalives_crlf_and_an_empty_delta_usage_chunk(serve: ServeFactory) -> None:
    usage_chunk = chunk([{"index": 0, "delta": {}, "finish_reason": None}], usage=BYOK_USAGE)
    url = await serve(
        streamer(
            b": OPENROUTER PROCESSING\r\n\r\n",
            sse(chunk([delta("Bon")]), b"\r\n"),
            b": OPENROUTER PROCESSING\r\n\r\n",
            b"data: " + orjson.dumps(chunk([delta("jo")]))[:20],  # one line in two writes
            orjson.dumps(chunk([delta("jo")]))[20:] + b"\r\n\r\n",
            sse(chunk([delta("ur", "stop")]), b"\r\n"),
            sse(usage_chunk, b"\r\n"),
            b"data: [DONE]\r\n\r\n",
        )
    )
    c = await stream_call(url)
    assert c.content == "Bonjour"
    assert (c.finish_reason, c.native_finish_reason) == ("stop", "stop")
    assert c.generation_id == GID
    assert c.usage == Usage(
        prompt_tokens=40,
        completion_tokens=9,
        cost=Decimal("0.0000015"),
        upstream_cost=Decimal("0.00003"),
        is_byok=True,
        reasoning_tokens=5,
        web_search_requests=1,
    )
    assert c.usage.billed == Decimal("0.0000315")


async def test_the_request_says_stream_true_and_the_payload_is_untouched(
    serve: ServeFactory,
) -> None:
    seen: list[Any] = []
    inner = streamer(*OK_EVENTS)

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        return await inner(request)

    body = payload()
    async with OpenRouterClient(await serve(handler), KEY) as client:
        c = await client.complete(body, stream=True)
    assert c.content == "Bonjour"
    assert c.usage.cost == Decimal("0.000123")
    assert seen[0]["stream"] is True
    assert seen[0]["messages"] == body["messages"]
    assert "stream" not in body


async def test_generation_id_from_the_first_chunk_without_header(serve: ServeFactory) -> None:
    url = await serve(streamer(*OK_EVENTS, header_gid=False))
    c = await stream_call(url)
    assert c.generation_id == GID


async def test_missing_usage_chunk_gives_usage_not_present(serve: ServeFactory) -> None:
    events = [e for e in OK_EVENTS if b'"usage"' not in e]
    url = await serve(streamer(*events))
    c = await stream_call(url)
    assert c.content == "Bonjour"
    assert c.finish_reason == "stop"
    assert c.usage == Usage(present=False)
    assert c.usage.cost is None
    assert c.generation_id == GID  # for GET /generation


async def test_idle_stream_times_out_with_the_generation_id(serve: ServeFactory) -> None:
    url = await serve(streamer(OK_EVENTS[0], OK_EVENTS[1], header_gid=False, end="hold"))
    err = await stream_error(url, idle_timeout_s=0.2)
    assert type(err) is RetryableError
    assert err.error_type == "timeout"
    assert err.status == 0
    assert err.generation_id == GID  # from the chunk: no header was sent


async def test_silence_before_the_first_byte_is_an_idle_timeout(serve: ServeFactory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.app[HOLD].wait()
        return web.Response()

    err = await stream_error(await serve(handler), idle_timeout_s=0.2)
    assert type(err) is RetryableError
    assert err.error_type == "timeout"
    assert err.generation_id is None


async def test_cut_after_the_first_chunk_is_a_connection_error(serve: ServeFactory) -> None:
    url = await serve(streamer(OK_EVENTS[1], header_gid=False, end="abort"))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.error_type == "connection"
    assert err.generation_id == GID


@pytest.mark.parametrize("end", ["abort", "eof", "hold"])
async def test_cut_after_finish_before_usage_keeps_the_answer_unpriced(
    serve: ServeFactory, end: str
) -> None:
    """The answer is whole and billed: kept (not sent and paid again), without usage, so the
    runner books it at its reservation until GET /generation says (audit; was an error)."""
    url = await serve(streamer(*OK_EVENTS[:4], end=end))  # content and finish only
    c = await stream_call(url, idle_timeout_s=0.2)
    assert c.content == "Bonjour"
    assert c.finish_reason == "stop"
    assert not c.usage.present
    assert c.generation_id == GID


async def test_eof_before_finish_is_a_connection_error(serve: ServeFactory) -> None:
    url = await serve(streamer(*OK_EVENTS[:3]))  # content, no finish, no usage, no [DONE]
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.error_type == "connection"
    assert err.generation_id == GID


@pytest.mark.parametrize("end", ["abort", "eof", "hold"])
async def test_cut_after_finish_and_usage_keeps_the_answer(serve: ServeFactory, end: str) -> None:
    url = await serve(streamer(*OK_EVENTS[:5], end=end))  # all but [DONE]
    c = await stream_call(url, idle_timeout_s=0.2)
    assert c.content == "Bonjour"
    assert c.finish_reason == "stop"
    assert c.usage.cost == Decimal("0.000123")


async def test_undecodable_data_line_is_malformed(serve: ServeFactory) -> None:
    url = await serve(streamer(OK_EVENTS[1], b'data: {"choices": [{"del\n\n', b"data: [DONE]\n\n"))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.error_type == "malformed_response"
    assert err.generation_id == GID


@pytest.mark.parametrize(
    "event",
    [b"data: 5\n\n", b'data: {"choices": {"a": 1}}\n\n', b'data: {"choices": ["x"]}\n\n'],
)
async def test_odd_chunk_shapes_are_malformed(serve: ServeFactory, event: bytes) -> None:
    url = await serve(streamer(OK_EVENTS[1], event, b"data: [DONE]\n\n"))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.error_type == "malformed_response"
    assert err.generation_id == GID


async def test_an_error_chunk_wins_over_an_odd_shape(serve: ServeFactory) -> None:
    bad = {"error": {"code": 503, "message": "overloaded"}, "choices": {"a": 1}}
    bad["usage"] = {"cost": "sNaN", "is_byok": True, "cost_details": {"upstream_inference_cost": 1}}
    url = await serve(streamer(sse(bad)))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.status == 503
    # passed on as read, but "sNaN" + upstream is no sum: not an amount (the runner reserves)
    assert err.cost is None or not err.cost.is_finite()


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [(502, RetryableError, 502), ("429", RateLimited, 429), (402, CreditsExhausted, 402)],
)
async def test_mid_stream_error_chunk_is_classified_like_a_200_body(
    serve: ServeFactory, code: int | str, cls: type[UpstreamError], status: int
) -> None:
    error = {"code": code, "message": "Provider returned error"}
    bad = chunk([delta("", "error")], error=error, usage={**USAGE, "cost": 0})
    url = await serve(streamer(OK_EVENTS[1], sse(bad), header_gid=False))
    err = await stream_error(url)
    assert type(err) is cls
    assert err.status == status
    assert err.generation_id == GID
    assert err.cost == Decimal(0)  # the usage seen in the stream


async def test_choice_level_stream_error_without_usage(serve: ServeFactory) -> None:
    bad = chunk([{**delta("", "error"), "error": {"code": 400, "message": "bad"}}])
    url = await serve(streamer(OK_EVENTS[1], sse(bad)))
    err = await stream_error(url)
    assert type(err) is RejectedError
    assert err.status == 400
    assert err.cost is None
    assert err.generation_id == GID


async def test_non_200_before_the_stream_is_classified_from_its_json(
    serve: ServeFactory,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = {"error": {"code": 402, "message": "Insufficient credits"}}
        return web.json_response(body, status=402, headers={"X-Generation-Id": GID})

    err = await stream_error(await serve(handler))
    assert type(err) is CreditsExhausted
    assert err.status == 402


async def test_a_whole_json_answer_to_a_stream_request_is_accepted(serve: ServeFactory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        doc = {
            "id": GID,
            "model": MODEL,
            "choices": [{"message": {"content": "Salut"}, "finish_reason": "stop"}],
            "usage": USAGE,
        }
        return web.json_response(doc)

    c = await stream_call(await serve(handler))
    assert (c.content, c.generation_id, c.usage.cost) == ("Salut", GID, Decimal("0.000123"))


async def test_done_without_any_choice_is_no_choices(serve: ServeFactory) -> None:
    url = await serve(streamer(sse(chunk([], usage=USAGE)), b"data: [DONE]\n\n"))
    err = await stream_error(url)
    assert type(err) is RetryableError
    assert err.error_type == "no_choices"
    assert err.cost == Decimal("0.000123")


# --- non-streaming: the generation id survives a timeout; BYOK in /generation -----------------


async def test_plain_call_timeout_keeps_the_header_generation_id(serve: ServeFactory) -> None:
    url = await serve(streamer(b"{", end="hold"))  # headers sent, body never finishes
    async with OpenRouterClient(url, KEY, timeout_s=0.2) as client:
        with pytest.raises(RetryableError) as info:
            await client.complete(payload())
    assert info.value.error_type == "timeout"
    assert info.value.generation_id == GID


async def test_plain_call_reset_keeps_the_header_generation_id(serve: ServeFactory) -> None:
    url = await serve(streamer(b'{"id": ', end="abort"))
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        with pytest.raises(RetryableError) as info:
            await client.complete(payload())
    assert info.value.error_type == "connection"
    assert info.value.generation_id == GID


def generation_handler(data: dict[str, Any] | None, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query["id"] == GID
        if status != 200:
            return web.json_response({"error": {"code": status, "message": "x"}}, status=status)
        return web.json_response({"data": data})

    return handler


async def test_generation_cost_on_byok(serve: ServeFactory) -> None:
    data = {"id": GID, "total_cost": 0.0000015, "upstream_inference_cost": 0.00003, "is_byok": True}
    url = await serve(generation_handler(data))
    async with OpenRouterClient(url, KEY) as client:
        cost = await client.generation_cost(GID)
    assert cost == GenerationCost(Decimal("0.0000015"), Decimal("0.00003"), is_byok=True)
    assert cost.billed == Decimal("0.0000315")


async def test_generation_cost_without_byok_and_unknowns(serve: ServeFactory) -> None:
    plain = {"total_cost": 0.00042, "upstream_inference_cost": None, "is_byok": False}
    for data, expected in [
        (plain, GenerationCost(Decimal("0.00042"))),
        ({"total_cost": None, "is_byok": False}, None),
        ({"is_byok": True}, None),
    ]:
        url = await serve(generation_handler(data))
        async with OpenRouterClient(url, KEY) as client:
            assert await client.generation_cost(GID) == expected
    url = await serve(generation_handler(None, status=404))
    async with OpenRouterClient(url, KEY) as client:
        assert await client.generation_cost(GID) is None


async def test_generation_cost_from_the_simulator(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    sim = await sim_client()
    url = str(sim.make_url("/api/v1"))
    async with OpenRouterClient(url, KEY) as client:
        c = await client.complete(payload(), stream=True)
        assert c.generation_id is not None
        assert await client.generation_cost(c.generation_id) is None  # not indexed yet: 404
        sim_clock.advance(1)
        cost = await client.generation_cost(c.generation_id)
    assert cost is not None
    assert cost.total_cost == c.usage.cost
    assert cost.is_byok is False
    assert cost.billed == c.usage.billed


@pytest.mark.parametrize("header_gid", [True, False])
async def test_a_cancelled_stream_leaves_its_generation_id_on_the_handle(
    serve: ServeFactory, header_gid: bool
) -> None:
    """The caller cancels a stream that sent its first chunk and went silent: no answer and no
    error come back, but the id (header, else first chunk) is on the handle it passed in, so
    the cancelled call can still be asked about at GET /generation."""
    url = await serve(streamer(*OK_EVENTS[:2], header_gid=header_gid, end="hold"))
    seen = CallSeen()
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        call = asyncio.ensure_future(
            client.complete(payload(), stream=True, idle_timeout_s=60, seen=seen)
        )
        deadline = asyncio.get_running_loop().time() + 30
        while seen.generation_id is None and not call.done():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.005)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert seen.generation_id == GID


async def test_a_plain_call_puts_the_header_id_on_the_handle(serve: ServeFactory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"X-Generation-Id": GID})
        await resp.prepare(request)
        await request.app[HOLD].wait()  # the body never comes
        return resp

    url = await serve(handler)
    seen = CallSeen()
    async with OpenRouterClient(url, KEY, timeout_s=30) as client:
        call = asyncio.ensure_future(client.complete(payload(), seen=seen))
        deadline = asyncio.get_running_loop().time() + 30
        while seen.generation_id is None and not call.done():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.005)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert seen.generation_id == GID
