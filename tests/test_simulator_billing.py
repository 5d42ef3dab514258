"""The simulator bills like the real service: answers without usage, BYOK, web search fees,
late /generation records and abandoned calls. Real loopback servers, exact Decimal totals.

Every test checks the ledger (what a real account would be charged) against what the answer,
GET /generation and GET /key say, because those are what a client can see.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import FakeClock, SimClientFactory

from batchroute.catalog import Catalog, ModelInfo
from batchroute.simulator import (
    FAULTS,
    PRESETS,
    ModelOverride,
    Scenario,
    SimulatorThread,
    load_scenario,
    set_scenario,
)
from batchroute.simulator.scenario import RANDOM_FAULTS

CHAT = "/api/v1/chat/completions"
AUTH = {"Authorization": "Bearer sk-test"}
MINI = "openai/gpt-4o-mini"  # no catalogue web_search price
HAIKU = "anthropic/claude-haiku-4.5"  # catalogue web_search "0.01"
CATALOG = Catalog.shipped()
Q = Decimal("1e-12")


def info(model: str) -> ModelInfo:
    found = CATALOG.get(model)
    assert found is not None
    return found


def list_price(model: str, prompt: int, completion: int) -> Decimal:
    return info(model).cost(prompt, completion).quantize(Q, rounding=ROUND_HALF_EVEN)


def fee_of(upstream: Decimal, rate: str = "0.05") -> Decimal:
    return (upstream * Decimal(rate)).quantize(Q, rounding=ROUND_HALF_EVEN)


def exact(x: float) -> Decimal:
    """What a client recovers from a JSON float."""
    return Decimal(repr(x))


def req(content: str = "hello", model: str = MINI, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def scripted(*steps: str, **fields: Any) -> Scenario:
    return Scenario.from_dict({"script": {"*": list(steps)}, **fields})


async def post(client: Any, body: dict[str, Any]) -> Any:
    return await client.post(CHAT, data=orjson.dumps(body), headers=AUTH)


async def ledger(client: Any) -> dict[str, Any]:
    result: dict[str, Any] = await (await client.get("/sim/ledger")).json()
    return result


async def generation(client: Any, gid: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(f"/api/v1/generation?id={gid}", headers=AUTH)
    body = await resp.json()
    return resp.status, body.get("data", {})


async def key_data(client: Any) -> dict[str, Any]:
    data: dict[str, Any] = (await (await client.get("/api/v1/key", headers=AUTH)).json())["data"]
    return data


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]


# --- 1. answers without usage ------------------------------------------------------------------


async def test_no_usage_answer_has_no_usage_key_but_is_billed_in_full(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(scripted("no_usage"))
    resp = await post(client, req("an answer nobody can price", max_tokens=50))
    assert resp.status == 200
    body = await resp.json()
    assert "usage" not in body
    assert body["choices"][0]["finish_reason"] in {"stop", "length"}
    assert body["choices"][0]["message"]["content"].startswith(f"[sim {MINI}] ")
    led = await ledger(client)
    assert led["calls"] == 1
    (g,) = led["generations"]
    assert g["id"] == body["id"] == resp.headers["X-Generation-Id"]
    assert g["usage_reported"] is False
    assert g["delivered"] is True
    expected = list_price(MINI, g["prompt_tokens"], g["completion_tokens"])
    assert Decimal(g["cost_usd"]) == Decimal(led["total_cost_usd"]) == expected > 0
    # the cost is only knowable from /generation, once the record exists
    assert (await generation(client, body["id"]))[0] == 404
    sim_clock.advance(0.5)
    status, data = await generation(client, body["id"])
    assert status == 200
    assert exact(data["total_cost"]) == exact(data["usage"]) == expected
    assert data["tokens_completion"] == g["completion_tokens"]
    assert exact((await key_data(client))["usage"]) == expected


async def test_no_usage_stream_ends_with_finish_chunk_and_done(
    sim_client: SimClientFactory,
) -> None:
    client = await sim_client(scripted("no_usage", completion_tokens={"mean": 60}))
    resp = await post(client, req(stream=True, max_tokens=500))
    text = (await resp.read()).decode()
    lines = [line for line in text.split("\n") if line]
    assert lines[-1] == "data: [DONE]"
    events = sse_events(text)
    assert not any("usage" in e for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert len(content) == 60 * 4  # the whole answer streamed, only the usage chunk is missing
    led = await ledger(client)
    (g,) = led["generations"]
    assert g["usage_reported"] is False
    assert Decimal(led["total_cost_usd"]) == list_price(MINI, g["prompt_tokens"], 60)


async def test_no_usage_random_rate(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(rate_no_usage=1.0))
    bodies = [await (await post(client, req(f"q{i}"))).json() for i in range(5)]
    assert all("usage" not in b and b["choices"] for b in bodies)
    led = await ledger(client)
    assert led["calls"] == 5
    assert not any(g["usage_reported"] for g in led["generations"])


def test_no_usage_is_a_fault_and_rates_still_sum_to_at_most_one() -> None:
    assert "no_usage" in FAULTS
    assert RANDOM_FAULTS[-1] == "no_usage"  # appended: earlier faults keep their draw bounds
    assert Scenario.from_dict({"script": {"*": ["no_usage"]}}).script["*"][0].fault == "no_usage"
    assert Scenario(rate_no_usage=0.5, rate_429=0.5).rate_no_usage == 0.5
    with pytest.raises(ValueError, match=r"add up to 1\.1 > 1"):
        Scenario.from_dict({"rate_no_usage": 0.6, "rate_429": 0.5})
    with pytest.raises(ValueError, match="add up to"):
        Scenario.from_dict({"models": {MINI: {"rate_no_usage": 0.9, "rate_502": 0.2}}})
    with pytest.raises(ValueError, match="rate_no_usage"):
        ModelOverride(rate_no_usage=1.5)


def test_chaos_preset_leaves_no_usage_out() -> None:
    chaos = load_scenario("chaos")
    assert "rate_no_usage" not in PRESETS["chaos"]
    assert chaos.rate_no_usage == 0
    assert chaos.rate_reset == chaos.rate_429 == 0.02


# --- 2. BYOK -------------------------------------------------------------------------------------


async def test_byok_cost_is_the_fee_and_the_ledger_bills_fee_plus_upstream(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(byok=True, generation_delay_s=0))
    body = await (await post(client, req("bring your own key", model=HAIKU, max_tokens=80))).json()
    usage = body["usage"]
    upstream = list_price(HAIKU, usage["prompt_tokens"], usage["completion_tokens"])
    fee = fee_of(upstream)
    assert usage["is_byok"] is True
    assert exact(usage["cost"]) == fee > 0
    details = usage["cost_details"]
    assert exact(details["upstream_inference_cost"]) == upstream
    split = exact(details["upstream_inference_prompt_cost"]) + exact(
        details["upstream_inference_completions_cost"]
    )
    assert split == upstream
    assert "server_tool_use" not in usage

    led = await ledger(client)
    (g,) = led["generations"]
    assert Decimal(led["total_cost_usd"]) == fee + upstream
    assert Decimal(g["cost_usd"]) == fee + upstream
    assert Decimal(g["fee_usd"]) == fee
    assert Decimal(g["upstream_usd"]) == upstream
    assert g["byok"] is True
    assert Decimal(led["fee_usd"]) == fee
    assert Decimal(led["upstream_usd"]) == upstream

    status, data = await generation(client, body["id"])
    assert status == 200
    assert exact(data["total_cost"]) == exact(data["usage"]) == fee
    assert exact(data["upstream_inference_cost"]) == upstream
    assert data["is_byok"] is True

    k = await key_data(client)
    for period in ("", "_daily", "_weekly", "_monthly"):
        assert exact(k[f"usage{period}"]) == fee
        assert exact(k[f"byok_usage{period}"]) == upstream


async def test_byok_stream_and_custom_fee_rate(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(byok=True, byok_fee_rate=0.25))
    text = (await (await post(client, req(model=HAIKU, stream=True))).read()).decode()
    usage = sse_events(text)[-1]["usage"]
    upstream = list_price(HAIKU, usage["prompt_tokens"], usage["completion_tokens"])
    assert usage["is_byok"] is True
    assert exact(usage["cost"]) == fee_of(upstream, "0.25")
    assert exact(usage["cost_details"]["upstream_inference_cost"]) == upstream
    led = await ledger(client)
    assert Decimal(led["total_cost_usd"]) == fee_of(upstream, "0.25") + upstream


async def test_byok_free_fee_bills_only_the_upstream(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(byok=True, byok_fee_rate=0))
    usage = (await (await post(client, req(model=HAIKU))).json())["usage"]
    upstream = list_price(HAIKU, usage["prompt_tokens"], usage["completion_tokens"])
    assert usage["cost"] == 0
    assert Decimal((await ledger(client))["total_cost_usd"]) == upstream > 0


def test_byok_fee_rate_is_validated() -> None:
    assert Scenario().byok is False
    assert Scenario().byok_fee_rate == 0.05
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match="byok_fee_rate"):
            Scenario.from_dict({"byok": True, "byok_fee_rate": bad})


async def test_byok_key_limit_counts_only_the_fee(sim_client: SimClientFactory) -> None:
    # list price of prompt + 1000 tokens of Haiku is about $0.005: over the limit without BYOK
    big = req("x", model=HAIKU, max_tokens=1000)
    plain = await sim_client(Scenario(key_limit_usd=0.001))
    assert (await post(plain, big)).status == 402
    byok = await sim_client(Scenario(key_limit_usd=0.001, byok=True))
    usage = (await (await post(byok, big)).json())["usage"]
    fee = exact(usage["cost"])
    k = await key_data(byok)
    assert exact(k["limit_remaining"]) == Decimal("0.001") - fee


async def test_non_byok_ledger_fields(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    usage = (await (await post(client, req())).json())["usage"]
    led = await ledger(client)
    (g,) = led["generations"]
    assert Decimal(g["cost_usd"]) == Decimal(g["fee_usd"]) == exact(usage["cost"])
    assert g["upstream_usd"] == "0"
    assert g["web_search_usd"] == "0"
    assert g["web_searches"] == 0
    assert g["byok"] is False
    assert g["usage_reported"] is True
    assert Decimal(led["upstream_usd"]) == 0
    assert (await key_data(client))["byok_usage"] == 0


# --- 3. web search -------------------------------------------------------------------------------


async def test_online_model_bills_its_catalogue_search_price(
    sim_client: SimClientFactory,
) -> None:
    client = await sim_client(Scenario(generation_delay_s=0))
    body = await (await post(client, req("news?", model=f"{HAIKU}:online"))).json()
    usage = body["usage"]
    upstream = list_price(HAIKU, usage["prompt_tokens"], usage["completion_tokens"])
    search = Decimal("0.01")  # anthropic/claude-haiku-4.5 pricing.web_search
    assert exact(usage["cost"]) == upstream + search
    assert exact(usage["cost_details"]["upstream_inference_cost"]) == upstream
    assert usage["server_tool_use"] == {"web_search_requests": 1}
    led = await ledger(client)
    (g,) = led["generations"]
    assert Decimal(g["cost_usd"]) == Decimal(led["total_cost_usd"]) == upstream + search
    assert Decimal(g["web_search_usd"]) == search
    assert g["web_searches"] == 1
    status, data = await generation(client, body["id"])
    assert status == 200
    assert exact(data["total_cost"]) == upstream + search
    assert exact(data["upstream_inference_cost"]) == upstream
    assert data["num_search_results"] == 5


async def test_web_plugin_defaults_to_five_results(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(generation_delay_s=0))
    plugins = [{"id": "context-compression"}, {"id": "web"}]
    body = await (await post(client, req(plugins=plugins))).json()
    usage = body["usage"]
    upstream = list_price(MINI, usage["prompt_tokens"], usage["completion_tokens"])
    assert exact(usage["cost"]) == upstream + Decimal("0.02")  # 5 results x $0.004
    assert usage["server_tool_use"] == {"web_search_requests": 1}
    # the web plugin switched off, or other plugins only: no search
    for off in ([{"id": "web", "enabled": False}], [{"id": "context-compression"}]):
        other = (await (await post(client, req("other", plugins=off))).json())["usage"]
        assert "server_tool_use" not in other
        price = list_price(MINI, other["prompt_tokens"], other["completion_tokens"])
        assert exact(other["cost"]) == price
    led = await ledger(client)
    assert [g["web_searches"] for g in led["generations"]] == [1, 0, 0]
    assert sum(Decimal(g["cost_usd"]) for g in led["generations"]) == Decimal(led["total_cost_usd"])
    status, data = await generation(client, body["id"])
    assert status == 200
    assert exact(data["total_cost"]) == upstream + Decimal("0.02")
    assert (await generation(client, led["generations"][1]["id"]))[1]["num_search_results"] is None


async def test_web_search_usd_overrides_the_price(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(web_search_usd=0.5))
    usage = (await (await post(client, req(model=f"{HAIKU}:online"))).json())["usage"]
    upstream = list_price(HAIKU, usage["prompt_tokens"], usage["completion_tokens"])
    assert exact(usage["cost"]) == upstream + Decimal("0.5")
    assert Decimal((await ledger(client))["generations"][0]["web_search_usd"]) == Decimal("0.5")


async def test_insured_answer_still_pays_for_its_search(sim_client: SimClientFactory) -> None:
    client = await sim_client(scripted("choice_error"))
    body = await (await post(client, req(model=f"{MINI}:online"))).json()
    assert body["choices"][0]["finish_reason"] == "error"
    usage = body["usage"]
    assert usage["completion_tokens"] == 0
    assert exact(usage["cost"]) == Decimal("0.02")
    assert usage["cost_details"]["upstream_inference_cost"] == 0
    led = await ledger(client)
    assert Decimal(led["total_cost_usd"]) == Decimal("0.02")


async def test_web_search_under_byok(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(byok=True))
    usage = (await (await post(client, req(model=f"{HAIKU}:online"))).json())["usage"]
    upstream = list_price(HAIKU, usage["prompt_tokens"], usage["completion_tokens"])
    fee = fee_of(upstream)
    assert exact(usage["cost"]) == fee + Decimal("0.01")
    assert exact(usage["cost_details"]["upstream_inference_cost"]) == upstream
    led = await ledger(client)
    (g,) = led["generations"]
    assert Decimal(g["fee_usd"]) == fee + Decimal("0.01")
    assert Decimal(g["upstream_usd"]) == upstream
    assert Decimal(led["total_cost_usd"]) == fee + Decimal("0.01") + upstream


async def test_search_fee_counts_in_the_credit_preflight(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(key_limit_usd=0.015))
    resp = await post(client, req(model=f"{MINI}:online", max_tokens=10))
    assert resp.status == 402  # a $0.02 search does not fit in $0.015
    assert "can only afford 0" in (await resp.json())["error"]["message"]
    assert (await post(client, req(max_tokens=10))).status == 200


# --- 4. /generation stays 404 for a long time ----------------------------------------------------


async def test_generation_404_for_an_hour_until_the_delay_is_lifted(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(generation_delay_s=3600))
    body = await (await post(client, req())).json()
    sim_clock.advance(3599.5)
    assert (await generation(client, body["id"]))[0] == 404
    # generations made under the old scenario follow the delay now in force
    set_scenario(client.server.app, Scenario(generation_delay_s=0))
    status, data = await generation(client, body["id"])
    assert status == 200
    assert exact(data["total_cost"]) == exact(body["usage"]["cost"])


async def test_generation_appears_once_the_long_delay_has_passed(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(generation_delay_s=3600))
    body = await (await post(client, req())).json()
    sim_clock.advance(3599.9)
    assert (await generation(client, body["id"]))[0] == 404
    sim_clock.advance(0.1)
    assert (await generation(client, body["id"]))[0] == 200


# --- 5. an abandoned call is still billed --------------------------------------------------------


async def test_client_that_gives_up_is_still_billed() -> None:
    scenario = Scenario(latency_ms=300, generation_delay_s=0)
    with SimulatorThread(scenario, seed=1) as sim:
        url = f"{sim.base_url}/chat/completions"
        impatient = aiohttp.ClientTimeout(total=0.05)
        async with aiohttp.ClientSession(timeout=impatient) as session:
            with pytest.raises(TimeoutError):
                async with session.post(url, data=orjson.dumps(req()), headers=AUTH) as resp:
                    await resp.read()
        # the simulated generation finishes after its 0.3 s latency although nobody waits
        deadline = time.monotonic() + 10
        led = sim.ledger()
        while led["calls"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            led = sim.ledger()
        assert led["calls"] == 1
        (g,) = led["generations"]
        expected = list_price(MINI, g["prompt_tokens"], g["completion_tokens"])
        assert Decimal(led["total_cost_usd"]) == expected > 0
        async with aiohttp.ClientSession() as session:
            gen_url = f"{sim.base_url}/generation?id={g['id']}"
            async with session.get(gen_url, headers=AUTH) as resp:
                assert resp.status == 200
                data = (await resp.json())["data"]
        assert exact(data["total_cost"]) == expected
