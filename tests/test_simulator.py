"""The offline OpenRouter simulator over real loopback HTTP (raw aiohttp client, fake clock)."""

from __future__ import annotations

import asyncio
import json
import random
import re
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application
from conftest import FakeClock, FakeSleep, SimClientFactory

from batchroute.catalog import Catalog
from batchroute.simulator import Scenario, create_app, load_scenario, set_scenario
from batchroute.simulator.responses import count_prompt_tokens, next_utc_midnight_ms

CHAT = "/api/v1/chat/completions"
AUTH = {"Authorization": "Bearer sk-test"}
MODEL = "openai/gpt-4o-mini"
CATALOG = Catalog.shipped()


def req(content: str = "hello", model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def scripted(*steps: str | dict[str, Any], model: str = "*", **fields: Any) -> Scenario:
    return Scenario.from_dict({"script": {model: list(steps)}, **fields})


def exact_cost(usage: dict[str, Any]) -> Decimal:
    """What a client recovers from the JSON float: Decimal(repr(float))."""
    return Decimal(repr(usage["cost"]))


async def post(client: Any, body: dict[str, Any], headers: dict[str, str] = AUTH) -> Any:
    return await client.post(CHAT, data=orjson.dumps(body), headers=headers)


# --- normal answers ----------------------------------------------------------------------------


async def test_completion_has_openrouter_shape_and_exact_cost(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    resp = await post(client, req("What is 2+2?", max_tokens=300))
    assert resp.status == 200
    body = await resp.json()
    assert re.fullmatch(r"gen-\d+-[A-Za-z0-9]{20}", body["id"])
    assert resp.headers["X-Generation-Id"] == body["id"]
    assert body["model"] == MODEL
    assert body["provider"] == "OpenAI"
    assert body["object"] == "chat.completion"
    assert body["system_fingerprint"] is None
    choice = body["choices"][0]
    assert choice["message"]["content"].startswith(f"[sim {MODEL}] ")
    assert choice["native_finish_reason"] == choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    info = CATALOG.get(MODEL)
    assert info is not None
    expected = info.cost(usage["prompt_tokens"], usage["completion_tokens"]).quantize(
        Decimal("1e-12"), rounding=ROUND_HALF_EVEN
    )
    assert exact_cost(usage) == expected > 0
    assert Decimal(repr(usage["cost_details"]["upstream_inference_cost"])) == expected
    assert usage["is_byok"] is False
    assert "cached_tokens" in usage["prompt_tokens_details"]
    assert "reasoning_tokens" in usage["completion_tokens_details"]


def test_prompt_tokens_never_exceed_budget_bound() -> None:
    """prompt_tokens ≤ Σ(UTF-8 bytes of content + 8), batchroute's budgeting upper bound."""
    rnd = random.Random(0)
    alphabet = "ab é漢🙂\n"
    for _ in range(500):
        messages = [
            {"role": "user", "content": "".join(rnd.choices(alphabet, k=rnd.randrange(0, 300)))}
            for _ in range(rnd.randrange(1, 6))
        ]
        bound = sum(len(m["content"].encode()) + 8 for m in messages)
        assert count_prompt_tokens(messages) <= bound
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}] * 3}]
    assert count_prompt_tokens(parts) <= len(b"hello") * 3 + 8


async def test_max_tokens_caps_completion_with_length(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario.from_dict({"completion_tokens": {"mean": 500, "sd": 1}}))
    body = await (await post(client, req(max_tokens=7))).json()
    assert body["usage"]["completion_tokens"] == 7
    assert body["choices"][0]["finish_reason"] == "length"
    body = await (await post(client, req(max_completion_tokens=9))).json()
    assert body["usage"]["completion_tokens"] == 9


async def test_json_mode_content_is_a_json_object(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    body = await (await post(client, req(response_format=fmt))).json()
    parsed = json.loads(body["choices"][0]["message"]["content"])
    assert parsed["sim"] == MODEL
    assert parsed["text"].startswith(f"[sim {MODEL}]")


async def test_free_and_floor_variants(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    free = await (await post(client, req(model="meta-llama/llama-3.3-70b-instruct:free"))).json()
    assert free["usage"]["cost"] == 0
    floor = await (await post(client, req("x", model=f"{MODEL}:floor", max_tokens=10))).json()
    info = CATALOG.get(MODEL)
    assert info is not None
    u = floor["usage"]
    assert exact_cost(u) == info.cost(u["prompt_tokens"], u["completion_tokens"])
    ledger = await (await client.get("/sim/ledger")).json()
    assert ledger["calls"] == 2  # the free answer carries usage, so it is counted


# --- validation --------------------------------------------------------------------------------


async def test_missing_or_bad_key_is_401(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        resp = await post(client, req(), headers=headers)
        assert resp.status == 401
        body = await resp.json()
        assert body["error"] == {"code": 401, "message": "No auth credentials found"}
        assert "user_id" in body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (req(model="nope/not-a-model"), "nope/not-a-model is not a valid model ID"),
        (req(models=[MODEL] * 4), "'models' array must have 3 items or fewer."),
        (req(models=["x/unknown"]), "x/unknown is not a valid model ID"),
        (
            req(provider={"Require_Parameters": True}),
            "Unrecognized key(s) in object: 'Require_Parameters'",
        ),
        ({"model": MODEL}, 'Input required: specify "messages" (a non-empty array)'),
    ],
)
async def test_invalid_requests_are_400(
    sim_client: SimClientFactory, body: dict[str, Any], message: str
) -> None:
    client = await sim_client()
    resp = await post(client, body)
    assert resp.status == 400
    assert (await resp.json())["error"]["message"] == message


async def test_known_provider_keys_are_accepted(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    provider = {"order": ["openai"], "allow_fallbacks": False, "sort": "price", "zdr": False}
    assert (await post(client, req(provider=provider, models=[MODEL] * 3))).status == 200


# --- one test per fault kind -------------------------------------------------------------------

STATUS_FAULTS = {
    "429": 429,
    "408": 408,
    "500": 500,
    "502": 502,
    "503": 503,
    "401": 401,
    "402": 402,
    "400_context": 400,
    "403": 403,
    "404": 404,
}


@pytest.mark.parametrize(("fault", "status"), STATUS_FAULTS.items())
async def test_scripted_error_status(sim_client: SimClientFactory, fault: str, status: int) -> None:
    client = await sim_client(scripted(fault, "ok"))
    resp = await post(client, req())
    assert resp.status == status
    body = await resp.json()
    assert body["error"]["code"] == status
    assert body["error"]["message"]
    assert resp.headers["X-Generation-Id"].startswith("gen-")
    assert (await post(client, req())).status == 200  # next entry: ok
    ledger = await (await client.get("/sim/ledger")).json()
    assert ledger["calls"] == 1  # failed generations are not billed


async def test_429_has_retry_after_and_availability(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted({"fault": "429", "retry_after_s": 7}))
    resp = await post(client, req())
    err = (await resp.json())["error"]
    assert resp.headers["Retry-After"] == "7"
    assert err["availability"]["code"] == "capacity_exhausted"
    assert err["availability"]["retryable"] is True
    assert err["availability"]["retry_after"] == 7
    assert "rate-limited upstream" in err["metadata"]["raw"]


async def test_429_daily_has_ratelimit_headers_and_no_retry_after(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(scripted("429_daily"))
    resp = await post(client, req())
    assert resp.status == 429
    assert "Retry-After" not in resp.headers
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    reset = int(resp.headers["X-RateLimit-Reset"])
    assert reset == next_utc_midnight_ms(sim_clock())
    assert reset % 86_400_000 == 0
    assert reset > sim_clock() * 1000
    assert "free-models-per-day" in (await resp.json())["error"]["message"]


async def test_502_raw_is_a_json_string(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("502"))
    err = (await (await post(client, req())).json())["error"]
    assert err["message"] == "Provider returned error"
    assert isinstance(json.loads(err["metadata"]["raw"]), dict)


async def test_503_has_availability(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("503", retry_after_s=3))
    resp = await post(client, req())
    av = (await resp.json())["error"]["availability"]
    assert av["code"] == "temporarily_unavailable"
    assert av["retryable"] is True
    assert av["retry_after"] == 3
    assert resp.headers["Retry-After"] == "3"


async def test_200_error_has_no_choices(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("200_error"))
    resp = await post(client, req())
    body = await resp.json()
    assert resp.status == 200
    assert "choices" not in body
    assert body["error"]["code"] == 502
    assert (await (await client.get("/sim/ledger")).json())["calls"] == 0


async def test_choice_error_is_insured(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("choice_error"))
    body = await (await post(client, req())).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "error"
    assert choice["error"]["code"] == 502
    assert body["usage"]["completion_tokens"] == 0
    assert body["usage"]["cost"] == 0
    ledger = await (await client.get("/sim/ledger")).json()
    assert ledger["calls"] == 1
    assert Decimal(ledger["total_cost_usd"]) == 0


async def test_empty_answer_is_billed_for_its_prompt(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("empty"))
    body = await (await post(client, req("a prompt of some length"))).json()
    assert body["choices"][0]["message"]["content"] == ""
    assert body["choices"][0]["finish_reason"] == "length"
    info = CATALOG.get(MODEL)
    assert info is not None
    assert exact_cost(body["usage"]) == info.cost(body["usage"]["prompt_tokens"], 0) > 0
    assert (await (await client.get("/sim/ledger")).json())["calls"] == 1


async def test_leading_whitespace_before_json(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("leading_ws"))
    raw = await (await post(client, req())).read()
    assert raw[:1] in (b"\n", b" ")
    assert raw.lstrip()[:1] == b"{"
    assert json.loads(raw)["usage"]["cost"] > 0


async def test_malformed_body(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("malformed"))
    resp = await post(client, req())
    assert resp.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(await resp.read())
    ledger = await (await client.get("/sim/ledger")).json()
    assert ledger["calls"] == 1
    assert ledger["generations"][0]["delivered"] is False


async def test_connection_reset_mid_body(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("reset"))

    async def fetch() -> bytes:
        resp = await post(client, req())
        return bytes(await resp.read())

    with pytest.raises(aiohttp.ClientError):
        await fetch()
    assert (await post(client, req())).status == 200  # the server is still fine


async def test_hang_sleeps_through_injected_sleep(
    sim_client: SimClientFactory, sim_sleep: FakeSleep
) -> None:
    client = await sim_client(scripted("hang"))
    resp = await post(client, req())
    assert sim_sleep.calls == [3600.0]
    assert resp.status == 408


async def test_ledger_counts_calls_in_flight(sim_clock: FakeClock) -> None:
    """`in_flight` counts a chat request until its answer is decided (tests wait on it)."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(_seconds: float) -> None:
        entered.set()
        await release.wait()

    app = create_app(scripted("hang"), clock=sim_clock, sleep=held)
    client: TestClient[object, Application] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        call = asyncio.ensure_future(post(client, req()))
        await asyncio.wait_for(entered.wait(), 30)
        ledger = await (await client.get("/sim/ledger")).json()
        assert (ledger["in_flight"], ledger["calls"]) == (1, 0)
        release.set()
        assert (await call).status == 408
        assert (await (await client.get("/sim/ledger")).json())["in_flight"] == 0
    finally:
        await client.close()


# --- ledger, determinism -----------------------------------------------------------------------


async def test_ledger_reconciles_exactly(sim_client: SimClientFactory) -> None:
    client = await sim_client(load_scenario("flaky"), seed=3)
    total = Decimal(0)
    billed = 0
    for i in range(60):
        model = (
            "openai/gpt-4o-mini",
            "anthropic/claude-haiku-4.5",
            "deepseek/deepseek-v4-flash:free",
        )[i % 3]
        body = json.loads(await (await post(client, req(f"record {i}", model=model))).read())
        if "usage" in body:
            total += exact_cost(body["usage"])
            billed += 1
    ledger = await (await client.get("/sim/ledger")).json()
    assert ledger["calls"] == billed < 60
    assert Decimal(ledger["total_cost_usd"]) == total
    assert sum(Decimal(g["cost_usd"]) for g in ledger["generations"]) == total


async def _outcomes(client: Any, n: int) -> list[tuple[int, int | None]]:
    out = []
    for i in range(n):
        resp = await post(client, req(f"q{i % 7}"))
        body = json.loads(await resp.read())
        out.append((resp.status, body.get("usage", {}).get("completion_tokens")))
    return out


CHAOSY = {"rate_429": 0.2, "rate_502": 0.1, "rate_503": 0.1, "rate_choice_error": 0.1}


async def test_same_seed_same_outcomes_different_seed_different(
    sim_client: SimClientFactory,
) -> None:
    a = await _outcomes(await sim_client(Scenario.from_dict(CHAOSY), seed=1), 40)
    b = await _outcomes(await sim_client(Scenario.from_dict(CHAOSY), seed=1), 40)
    c = await _outcomes(await sim_client(Scenario.from_dict(CHAOSY), seed=2), 40)
    assert a == b
    assert a != c
    assert {s for s, _ in a} > {200}


async def test_outcome_independent_of_arrival_order(sim_client: SimClientFactory) -> None:
    one = await sim_client(Scenario.from_dict(CHAOSY), seed=5)
    two = await sim_client(Scenario.from_dict(CHAOSY), seed=5)
    prompts = [f"p{i}" for i in range(12)]

    async def run(client: Any, order: list[str]) -> dict[str, bytes]:
        async def one_call(p: str) -> tuple[str, bytes]:
            raw = await (await post(client, req(p))).read()
            return p, re.sub(rb'"(id|created)":("[^"]*"|\d+)', b"", raw)

        return dict(await asyncio.gather(*(one_call(p) for p in order)))

    assert await run(one, prompts) == await run(two, prompts[::-1])


# --- accounting endpoints ----------------------------------------------------------------------


async def test_generation_is_404_then_200(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client()
    body = await (await post(client, req())).json()
    url = f"/api/v1/generation?id={body['id']}"
    assert (await client.get(url, headers=AUTH)).status == 404
    sim_clock.advance(0.6)
    resp = await client.get(url, headers=AUTH)
    assert resp.status == 200
    data = (await resp.json())["data"]
    assert data["id"] == body["id"]
    assert data["model"] == MODEL
    assert Decimal(repr(data["total_cost"])) == exact_cost(body["usage"])
    assert data["tokens_prompt"] == body["usage"]["prompt_tokens"]
    assert data["native_tokens_completion"] == body["usage"]["completion_tokens"]
    assert data["streamed"] is False
    assert data["provider_name"] == "OpenAI"
    assert (await client.get("/api/v1/generation?id=gen-0-x", headers=AUTH)).status == 404


async def test_key_reflects_usage_and_limit(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(key_limit_usd=1.0))
    body = await (await post(client, req(max_tokens=100))).json()
    for path in ("/api/v1/key", "/api/v1/auth/key"):
        data = (await (await client.get(path, headers=AUTH)).json())["data"]
        assert Decimal(repr(data["usage"])) == exact_cost(body["usage"])
        assert data["usage_daily"] == data["usage"]
        assert data["limit"] == 1.0
        assert Decimal(repr(data["limit_remaining"])) == Decimal(1) - exact_cost(body["usage"])
        assert data["is_free_tier"] is False
        assert "label" in data
    assert (await client.get("/api/v1/key")).status == 401


async def test_key_rpm_gives_429_until_window_slides(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(key_rpm=3))
    statuses = [(await post(client, req(f"{i}"))).status for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = await post(client, req())
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    other_key = {"Authorization": "Bearer sk-other"}
    assert (await post(client, req(), headers=other_key)).status == 200
    sim_clock.advance(61)
    assert (await post(client, req())).status == 200


async def test_key_limit_gives_402(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(key_limit_usd=0.0001))
    resp = await post(client, req(max_tokens=100_000))
    assert resp.status == 402
    msg = (await resp.json())["error"]["message"]
    assert re.search(r"You requested up to 100000 tokens, but can only afford \d+", msg)
    assert msg.startswith("This request requires more credits, or fewer max_tokens.")
    # small calls go through until the pre-flight check refuses the next one
    statuses = [(await post(client, req(f"{i}", max_tokens=10))).status for i in range(40)]
    assert 200 in statuses
    assert statuses[-1] == 402
    ledger = await (await client.get("/sim/ledger")).json()
    assert Decimal(ledger["total_cost_usd"]) <= Decimal("0.0001")
    free = "meta-llama/llama-3.3-70b-instruct:free"
    assert (await post(client, req("x", model=free))).status == 200  # still some credit left


async def test_no_credit_left_is_402_even_on_free(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(key_limit_usd=0))
    resp = await post(client, req("x", model="meta-llama/llama-3.3-70b-instruct:free"))
    assert resp.status == 402
    assert (await resp.json())["error"]["message"] == "Insufficient credits"


async def test_outage_window(sim_client: SimClientFactory, sim_clock: FakeClock) -> None:
    outage = {"model": MODEL, "start_s": 10, "end_s": 20, "status": 502}
    client = await sim_client(Scenario.from_dict({"outages": [outage]}))
    assert (await post(client, req())).status == 200
    sim_clock.advance(15)
    assert (await post(client, req())).status == 502
    other = await post(client, req(model="anthropic/claude-haiku-4.5"))
    assert other.status == 200
    sim_clock.advance(10)
    assert (await post(client, req())).status == 200


async def test_models_fallback_names_the_serving_model(sim_client: SimClientFactory) -> None:
    fallback = "anthropic/claude-haiku-4.5"
    client = await sim_client(scripted("503", model=MODEL))
    body = await (await post(client, req(models=[fallback]))).json()
    assert body["model"] == fallback
    assert body["provider"] == "Anthropic"
    ledger = await (await client.get("/sim/ledger")).json()
    assert ledger["generations"][0]["model"] == fallback
    # non-fallback faults (e.g. 402) are returned as they are
    set_scenario(client.server.app, scripted("402", model=MODEL))
    assert (await post(client, req(models=[fallback]))).status == 402


async def test_max_price_is_per_million_tokens(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    cheap = {"prompt": 1, "completion": 1}  # USD per million tokens
    expensive = "anthropic/claude-opus-4.7-fast"
    body = await (
        await post(client, req(model=expensive, models=[MODEL], provider={"max_price": cheap}))
    ).json()
    assert body["model"] == MODEL
    resp = await post(client, req(model=expensive, provider={"max_price": cheap}))
    assert resp.status == 404
    assert (await resp.json())["error"]["availability"]["excluded_by"] == ["max_price"]


async def test_models_endpoint(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    data = (await (await client.get("/api/v1/models")).json())["data"]
    assert len(data) == len(CATALOG)
    images = (await (await client.get("/api/v1/models?output_modalities=image")).json())["data"]
    assert 0 < len(images) < len(data)
    assert all("image" in m["architecture"]["modality"].split("->")[1] for m in images)


# --- streaming ---------------------------------------------------------------------------------


async def test_streaming_format(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario.from_dict({"completion_tokens": {"mean": 80}}))
    resp = await post(client, req(stream=True, max_tokens=500))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    text = (await resp.read()).decode()
    lines = [line for line in text.split("\n") if line]
    assert lines[0] == ": OPENROUTER PROCESSING"
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert content.startswith(f"[sim {MODEL}] ")
    finish, usage = events[-2], events[-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in finish
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 80
    ledger = await (await client.get("/sim/ledger")).json()
    assert Decimal(ledger["total_cost_usd"]) == exact_cost(usage["usage"])


async def test_streaming_mid_stream_error_is_not_billed(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("choice_error"))
    text = (await (await post(client, req(stream=True))).read()).decode()
    events = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == 502
    assert events[-1]["choices"][0]["finish_reason"] == "error"
    assert "[DONE]" not in text
    assert (await (await client.get("/sim/ledger")).json())["calls"] == 0


async def test_streaming_pre_token_fault_is_a_real_status(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("429"))
    assert (await post(client, req(stream=True))).status == 429


async def test_latency_and_speed_use_injected_sleep(
    sim_client: SimClientFactory, sim_sleep: FakeSleep
) -> None:
    scenario = Scenario.from_dict(
        {"latency_ms": 250, "tokens_per_s": 100, "completion_tokens": {"mean": 50}}
    )
    client = await sim_client(scenario)
    await post(client, req())
    assert sim_sleep.calls == [pytest.approx(0.25 + 0.5)]


# --- scenarios ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clean", "flaky", "chaos", "slow"])
def test_presets_load(name: str) -> None:
    assert isinstance(load_scenario(name), Scenario)


def test_unknown_scenario_is_named() -> None:
    with pytest.raises(ValueError, match="no-such-preset"):
        load_scenario("no-such-preset")


def test_scenario_file_and_strictness(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "latency_ms: {dist: lognormal, median: 100, sigma: 0.3}\n"
        "rate_429: 0.1\n"
        "models:\n  openai/gpt-4o-mini: {rate_502: 0.5}\n"
        "script:\n  '*': ['429', {fault: ok, completion_tokens: 3}]\n"
    )
    s = load_scenario(str(path))
    assert s.models[MODEL].rate_502 == 0.5
    assert s.script["*"][1].completion_tokens == 3
    assert Scenario.from_dict(s.to_dict()) == s
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({"key_rpm": 5}))
    assert load_scenario(str(as_json)).key_rpm == 5
    with pytest.raises(ValueError, match="rate_492"):
        Scenario.from_dict({"rate_492": 0.1})
    with pytest.raises(ValueError, match="unknown fault"):
        Scenario.from_dict({"script": {"*": ["boom"]}})
    assert Scenario().with_latency(40).latency_ms == 40


async def test_scenario_replaced_at_runtime(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    assert (await post(client, req())).status == 200
    resp = await client.post("/sim/scenario", json={"script": {"*": ["500"]}})
    assert resp.status == 200
    assert (await post(client, req())).status == 500
    assert (await client.post("/sim/scenario", json={"bogus": 1})).status == 400
    current = await (await client.get("/sim/scenario")).json()
    assert current["script"]["*"][0]["fault"] == "500"


async def test_per_model_override(sim_client: SimClientFactory) -> None:
    scenario = Scenario.from_dict({"models": {MODEL: {"rate_503": 1.0}}})
    client = await sim_client(scenario)
    assert (await post(client, req())).status == 503
    assert (await post(client, req(model="anthropic/claude-haiku-4.5"))).status == 200
