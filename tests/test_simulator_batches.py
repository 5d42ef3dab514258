"""The simulated Batch API over real loopback HTTP (aiohttp client, the simulator's fake clock).

Time never passes for real: each test moves the injected clock (`sim_clock.advance`) past the
scenario's batch timings and asks again.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from conftest import FakeClock, SimClientFactory

from batchroute.catalog import Catalog
from batchroute.simulator import Scenario, SimulatorThread

BATCHES = "/api/v1/batches"
AUTH = {"Authorization": "Bearer sk-test"}
MODEL = "openai/gpt-4o-mini"
CATALOG = Catalog.shipped()
Q = Decimal("1e-12")


def requests_for(n: int, *, prefix: str = "rec", max_tokens: int = 64) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i:05d}",
            "body": {
                "messages": [{"role": "user", "content": f"question number {i}"}],
                "max_tokens": max_tokens,
            },
        }
        for i in range(n)
    ]


def batch_body(n: int = 3, *, model: str = MODEL, **kw: Any) -> dict[str, Any]:
    """Keys in the order the API requires: endpoint and model before requests."""
    return {"endpoint": "/v1/chat/completions", "model": model, "requests": requests_for(n, **kw)}


async def submit(client: Any, body: Any, headers: dict[str, str] = AUTH) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(BATCHES, data=data, headers=headers)


async def get_json(client: Any, path: str, expect: int = 200, **params: Any) -> Any:
    resp = await client.get(path, headers=AUTH, params=params)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def submitted(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = await submit(client, body)
    assert resp.status == 202, await resp.text()
    obj: dict[str, Any] = await resp.json()
    return obj


async def finished(client: Any, clock: FakeClock, body: dict[str, Any]) -> dict[str, Any]:
    """Submit, move the clock past every timing, and return the terminal batch object."""
    b = await submitted(client, body)
    clock.advance(3600)
    obj: dict[str, Any] = await get_json(client, f"{BATCHES}/{b['id']}")
    return obj


async def ledger(client: Any) -> dict[str, Any]:
    return await get_json(client, "/sim/ledger")  # type: ignore[no-any-return]


def half_price(prompt: int, completion: int, model: str = MODEL) -> Decimal:
    info = CATALOG.get(model)
    assert info is not None
    return (info.cost(prompt, completion) * Decimal("0.5")).quantize(Q, rounding=ROUND_HALF_EVEN)


# --- submission and the timeline -----------------------------------------------------------


async def test_submit_answers_202_with_a_validating_batch(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    resp = await submit(client, batch_body(3))
    assert resp.status == 202
    b = await resp.json()
    assert list(b) == [
        "id",
        "object",
        "endpoint",
        "model",
        "completion_window",
        "status",
        "created_at",
        "finalized_at",
        "request_counts",
        "usage",
        "results",
        "error",
    ]
    assert b["id"].startswith("batch-")
    assert (b["object"], b["endpoint"], b["model"]) == ("batch", "/v1/chat/completions", MODEL)
    assert (b["status"], b["completion_window"]) == ("validating", "24h")
    assert b["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert b["usage"] is None
    assert b["results"] is None
    assert b["error"] is None
    assert b["finalized_at"] is None
    assert (await ledger(client))["batches"] == 1


async def test_a_new_batch_is_404_for_a_while_then_visible(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(batch_not_found_s=5, batch_validating_s=10))
    b = await submitted(client, batch_body(2))
    for path in (f"{BATCHES}/{b['id']}", f"{BATCHES}/{b['id']}/results"):
        body = await get_json(client, path, 404)
        assert body["error"]["message"] == f"Batch job {b['id']} not found."
    resp = await client.delete(f"{BATCHES}/{b['id']}", headers=AUTH)
    assert resp.status == 404
    assert (await get_json(client, BATCHES))["data"] == []
    sim_clock.advance(4.9)
    await get_json(client, f"{BATCHES}/{b['id']}", 404)
    sim_clock.advance(0.1)
    assert (await get_json(client, f"{BATCHES}/{b['id']}"))["status"] == "validating"
    assert [x["id"] for x in (await get_json(client, BATCHES))["data"]] == [b["id"]]


async def test_status_moves_validating_in_progress_finalizing_completed(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    sc = Scenario(
        batch_not_found_s=0, batch_validating_s=10, batch_in_progress_s=100, batch_finalizing_s=5
    )
    client = await sim_client(sc)
    b = await submitted(client, batch_body(4))
    path = f"{BATCHES}/{b['id']}"
    seen = []
    for step in (9, 1, 49, 51, 4, 1):  # t = 9, 10, 59, 110, 114, 115
        now = await get_json(client, path)
        seen.append((now["status"], now["request_counts"]["completed"]))
        if now["status"] != "completed":
            assert now["results"] is None
            assert now["usage"] is None
            assert now["finalized_at"] is None
        sim_clock.advance(step)
    now = await get_json(client, path)
    seen.append((now["status"], now["request_counts"]["completed"]))
    assert seen == [
        ("validating", 0),
        ("validating", 0),
        ("in_progress", 0),
        ("in_progress", 1),  # item k finishes at 10 + (k+1)/4 * 100: 35, 60, 85, 110
        ("finalizing", 4),
        ("finalizing", 4),
        ("completed", 4),
    ]
    assert now["finalized_at"] is not None
    assert sorted(r["custom_id"] for r in now["results"]) == [f"rec-{i:05d}" for i in range(4)]
    assert now["usage"]["cost"] > 0


async def test_sim_advance_moves_the_clock_over_http(sim_client: SimClientFactory) -> None:
    client = await sim_client()
    b = await submitted(client, batch_body(1))
    resp = await client.post("/sim/advance", data=orjson.dumps({"seconds": 60}))
    assert resp.status == 200
    assert (await get_json(client, f"{BATCHES}/{b['id']}"))["status"] == "completed"
    bad = await client.post("/sim/advance", data=orjson.dumps({"seconds": -1}))
    assert bad.status == 400


# --- results --------------------------------------------------------------------------------


async def test_results_pages_with_cursors_cover_every_item_once(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client()
    b = await finished(client, sim_clock, batch_body(250))
    path = f"{BATCHES}/{b['id']}/results"
    pages, cursor = [], None
    while True:
        params = {"limit": "100"} if cursor is None else {"limit": "100", "cursor": cursor}
        page = await get_json(client, path, **params)
        assert page["object"] == "list"
        pages.append(page["data"])
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert [len(p) for p in pages] == [100, 100, 50]
    ids = [r["custom_id"] for p in pages for r in p]
    assert sorted(ids) == [f"rec-{i:05d}" for i in range(250)]
    assert ids != sorted(ids)  # order is not guaranteed: results come in completion order
    assert [r for p in pages for r in p] == b["results"]  # the same lines as inline
    default = await get_json(client, path)
    assert len(default["data"]) == 100
    bad = await client.get(path, headers=AUTH, params={"cursor": "bm9wZTox"})
    assert bad.status == 400


async def test_results_of_an_unfinished_batch_are_409(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(batch_not_found_s=0))
    b = await submitted(client, batch_body(2))
    body = await get_json(client, f"{BATCHES}/{b['id']}/results", 409)
    assert "validating" in body["error"]["message"]


async def test_result_lines_have_the_openrouter_shape(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client()
    b = await finished(client, sim_clock, batch_body(2))
    line = b["results"][0]
    assert list(line) == ["id", "custom_id", "response", "error"]
    assert line["id"].startswith("batch_req_")
    assert line["error"] is None
    resp = line["response"]
    assert (resp["status_code"], resp["request_id"]) == (200, None)
    body = resp["body"]
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("gen-batch-")
    assert body["service_tier"] == "batch"
    assert body["choices"][0]["message"]["content"].startswith(f"[sim {MODEL}] ")
    # default batch_item_usage "tokens": per-item tokens, no per-item cost
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


@pytest.mark.parametrize("mode", ["cost", "none"])
async def test_item_usage_modes(
    sim_client: SimClientFactory, sim_clock: FakeClock, mode: str
) -> None:
    client = await sim_client(Scenario(batch_item_usage=mode))  # type: ignore[arg-type]
    b = await finished(client, sim_clock, batch_body(3))
    bodies = [r["response"]["body"] for r in b["results"]]
    if mode == "none":
        assert all("usage" not in x for x in bodies)
    else:
        total = sum(Decimal(repr(x["usage"]["cost"])) for x in bodies)
        assert total == Decimal(repr(b["usage"]["cost"]))


# --- money ----------------------------------------------------------------------------------


async def test_batch_items_cost_half_the_synchronous_price_and_the_ledger_agrees(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    """Same seed, same records: the batch answers have the synchronous token counts, each at
    exactly half the catalogue price; the ledger bills the batch's usage.cost to the cent."""
    sync_client = await sim_client(seed=3)
    sync_costs = {}
    sync_tokens = {}
    for req in requests_for(40):
        body = {"model": MODEL, **req["body"]}
        resp = await sync_client.post(
            "/api/v1/chat/completions", data=orjson.dumps(body), headers=AUTH
        )
        usage = (await resp.json())["usage"]
        sync_costs[req["custom_id"]] = Decimal(repr(usage["cost"]))
        sync_tokens[req["custom_id"]] = (usage["prompt_tokens"], usage["completion_tokens"])
    client = await sim_client(seed=3)
    b = await finished(client, sim_clock, batch_body(40))
    assert b["status"] == "completed"
    batch_total = Decimal(0)
    for line in b["results"]:
        u = line["response"]["body"]["usage"]
        tokens = (u["prompt_tokens"], u["completion_tokens"])
        assert tokens == sync_tokens[line["custom_id"]]
        batch_total += half_price(*tokens)
    assert Decimal(repr(b["usage"]["cost"])) == batch_total
    ratio = batch_total / sum(sync_costs.values())
    assert Decimal("0.4999") < ratio < Decimal("0.5001")
    led = await ledger(client)
    assert (led["batches"], led["batch_items"], led["calls"]) == (1, 40, 0)
    assert Decimal(led["batch_cost_usd"]) == Decimal(led["total_cost_usd"]) == batch_total
    assert sum(Decimal(g["cost_usd"]) for g in led["batch_generations"]) == batch_total
    key = await get_json(client, "/api/v1/key")
    assert Decimal(repr(key["data"]["usage"])) == batch_total


async def test_items_are_billed_when_their_result_exists(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(batch_validating_s=0, batch_in_progress_s=100))
    await submitted(client, batch_body(4))
    assert (await ledger(client))["batch_items"] == 0
    sim_clock.advance(50)  # items finish at 25, 50, 75, 100
    assert (await ledger(client))["batch_items"] == 2
    sim_clock.advance(100)
    assert (await ledger(client))["batch_items"] == 4


async def test_a_batch_over_the_key_limit_is_refused_with_402(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(key_limit_usd=0.0001))
    resp = await submit(client, batch_body(100, max_tokens=4000))
    assert resp.status == 402
    assert (await ledger(client))["batches"] == 0
    assert (await submit(client, batch_body(1, max_tokens=10))).status == 202


# --- state outlives connections (a runner killed with -9 talks to the same simulator) --------


async def test_batches_survive_a_new_client_connection() -> None:
    clock = FakeClock()
    with SimulatorThread(Scenario(), seed=5, clock=clock) as sim:
        async with aiohttp.ClientSession(headers=AUTH) as first:
            resp = await first.post(f"{sim.base_url}/batches", data=orjson.dumps(batch_body(3)))
            assert resp.status == 202
            batch_id = (await resp.json())["id"]
        sim.advance(3600)  # the first client is gone; a new one asks
        async with aiohttp.ClientSession(
            headers=AUTH, connector=aiohttp.TCPConnector(force_close=True)
        ) as second:
            resp = await second.get(f"{sim.base_url}/batches/{batch_id}")
            assert resp.status == 200
            body = await resp.json()
        assert body["status"] == "completed"
        assert len(body["results"]) == 3
        assert sim.ledger()["batches"] == 1


def test_the_openai_sdk_raw_http_drives_a_batch() -> None:
    """The official SDK's generic post/get (no batch helpers exist for OpenRouter's shape)."""
    clock = FakeClock()
    with SimulatorThread(Scenario(), seed=9, clock=clock) as sim:
        sdk = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, timeout=5)
        created: Any = sdk.post("/batches", body=batch_body(2), cast_to=object)
        assert created["status"] == "validating"
        with pytest.raises(openai.NotFoundError):
            sdk.get(f"/batches/{created['id']}", cast_to=object)
        sim.advance(3600)
        got: Any = sdk.get(f"/batches/{created['id']}", cast_to=object)
        assert got["status"] == "completed"
        page: Any = sdk.get(f"/batches/{created['id']}/results", cast_to=object)
        assert {r["custom_id"] for r in page["data"]} == {"rec-00000", "rec-00001"}
        sim.set_scenario(Scenario(batch_enabled=False))
        with pytest.raises(openai.BadRequestError, match="does not have a :batch endpoint"):
            sdk.post("/batches", body=batch_body(1), cast_to=object)
        deleted: Any = sdk.delete(f"/batches/{created['id']}", cast_to=object)
        assert deleted["deletion"] == {"openrouter": "deleted"}
        sdk.close()
        assert Decimal(sim.ledger()["total_cost_usd"]) == Decimal(repr(got["usage"]["cost"]))
