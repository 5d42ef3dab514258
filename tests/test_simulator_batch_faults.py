"""The simulated Batch API's failures (over real loopback HTTP, fake clock): refused
submissions, per-item and whole-batch failures by seed, expiry, models without a batch
endpoint, DELETE and the missing cancel, list paging, and state that outlives a connection."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from conftest import FakeClock, SimClientFactory
from test_simulator_batches import (
    AUTH,
    BATCHES,
    MODEL,
    batch_body,
    finished,
    get_json,
    ledger,
    requests_for,
    submit,
    submitted,
)

from batchroute.simulator import Scenario

# --- refused at submission (nothing stored, nothing billed) ---------------------------------


def _raw(*pairs: tuple[str, Any]) -> bytes:
    """A JSON object with its keys in exactly this order."""
    return orjson.dumps(dict(pairs))


REQS = requests_for(2)
DUP = [REQS[0], {**REQS[1], "custom_id": REQS[0]["custom_id"]}]
REFUSED: dict[str, tuple[bytes, int, str]] = {
    "requests before model": (
        _raw(("endpoint", "/v1/chat/completions"), ("requests", REQS), ("model", MODEL)),
        400,
        'must be serialized before "requests"',
    ),
    "model missing": (
        _raw(("endpoint", "/v1/chat/completions"), ("requests", REQS)),
        400,
        'must be serialized before "requests"',
    ),
    "callback_url after requests": (
        _raw(
            ("endpoint", "/v1/chat/completions"),
            ("model", MODEL),
            ("requests", REQS),
            ("callback_url", "https://example.invalid/hook"),
        ),
        400,
        '"callback_url", if given',
    ),
    "duplicate custom_id": (
        _raw(("endpoint", "/v1/chat/completions"), ("model", MODEL), ("requests", DUP)),
        422,
        "Request at line 2 has a duplicate custom_id 'rec-00000'",
    ),
    "custom_id missing": (
        _raw(("endpoint", "/v1/chat/completions"), ("model", MODEL), ("requests", [{"body": {}}])),
        400,
        "custom_id: Invalid input: expected string",
    ),
    "custom_id too long": (
        _raw(
            ("endpoint", "/v1/chat/completions"),
            ("model", MODEL),
            ("requests", [{**REQS[0], "custom_id": "x" * 65}]),
        ),
        400,
        "must be 1-64 characters of [A-Za-z0-9_-]",
    ),
    "custom_id with a dot": (
        _raw(
            ("endpoint", "/v1/chat/completions"),
            ("model", MODEL),
            ("requests", [{**REQS[0], "custom_id": "a.b"}]),
        ),
        400,
        "must be 1-64 characters of [A-Za-z0-9_-]",
    ),
    "item model differs": (
        _raw(
            ("endpoint", "/v1/chat/completions"),
            ("model", MODEL),
            ("requests", [{"custom_id": "a", "body": {**REQS[0]["body"], "model": "x/y"}}]),
        ),
        400,
        "does not match the batch model",
    ),
    "empty requests": (
        _raw(("endpoint", "/v1/chat/completions"), ("model", MODEL), ("requests", [])),
        400,
        "non-empty array",
    ),
    "unknown model": (
        _raw(("endpoint", "/v1/chat/completions"), ("model", "no/such-model"), ("requests", REQS)),
        400,
        "no/such-model is not a valid model ID",
    ),
    "other completion window": (
        _raw(
            ("endpoint", "/v1/chat/completions"),
            ("model", MODEL),
            ("completion_window", "48h"),
            ("requests", REQS),
        ),
        400,
        'expected "24h"',
    ),
    "provider.order": (
        _raw(
            ("endpoint", "/v1/chat/completions"),
            ("model", MODEL),
            ("provider", {"order": ["openai"]}),
            ("requests", REQS),
        ),
        400,
        "Unrecognized key(s) in object: 'order'",
    ),
    "not JSON": (b"{nope", 400, "Invalid JSON body"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_bad_submissions_are_refused_at_once(sim_client: SimClientFactory, case: str) -> None:
    data, status, message = REFUSED[case]
    client = await sim_client()
    resp = await submit(client, data)
    assert resp.status == status
    assert message in (await resp.json())["error"]["message"]
    assert (await ledger(client))["batches"] == 0


async def test_limits_on_count_bytes_and_auth(sim_client: SimClientFactory) -> None:
    client = await sim_client(Scenario(batch_max_requests=10, batch_max_bytes=4000))
    too_many = await submit(client, batch_body(11))
    assert too_many.status == 400
    assert "at most 10 requests" in (await too_many.json())["error"]["message"]
    big = batch_body(1)
    big["requests"][0]["body"]["messages"][0]["content"] = "x" * 5000
    assert (await submit(client, big)).status == 413
    assert (await submit(client, batch_body(2), headers={})).status == 401
    assert (await client.get(BATCHES)).status == 401
    assert (await submit(client, batch_body(10))).status == 202
    assert (await ledger(client))["batches"] == 1


# --- models without a batch endpoint --------------------------------------------------------

NO_BATCH = "Model '{}' does not have a :batch endpoint."


@pytest.mark.parametrize(
    ("fields", "model", "refused"),
    [
        ({"batch_unsupported_models": [MODEL]}, MODEL, True),
        ({"batch_unsupported_models": [MODEL]}, f"{MODEL}:batch", True),
        ({"batch_unsupported_models": [f"{MODEL}:batch"]}, MODEL, False),
        ({"batch_unsupported_models": [f"{MODEL}:batch"]}, f"{MODEL}:batch", True),
        ({"batch_requires_variant": True}, MODEL, True),
        ({"batch_requires_variant": True}, f"{MODEL}:batch", False),
        ({"batch_enabled": False}, f"{MODEL}:batch", True),
        ({}, f"{MODEL}:floor", True),
        ({}, "openrouter/auto", True),
        ({}, f"{MODEL}:batch", False),
    ],
)
async def test_models_without_a_batch_endpoint_get_the_real_400(
    sim_client: SimClientFactory, fields: dict[str, Any], model: str, refused: bool
) -> None:
    client = await sim_client(Scenario.from_dict(fields))
    resp = await submit(client, batch_body(2, model=model))
    if refused:
        assert resp.status == 400
        assert (await resp.json())["error"]["message"] == NO_BATCH.format(model)
    else:
        assert resp.status == 202
        assert (await resp.json())["model"] == model


# --- failures after the 202, by seed ---------------------------------------------------------


async def _failed_ids(sim_client: SimClientFactory, clock: FakeClock, seed: int) -> list[str]:
    client = await sim_client(Scenario(rate_batch_item_error=0.3), seed=seed)
    b = await finished(client, clock, batch_body(200))
    assert b["status"] == "completed"
    failed = [r for r in b["results"] if r["error"] is not None]
    for r in failed:
        assert r["response"] is None
        assert r["error"]["message"] == "Upstream request failed with status 500."
    counts = b["request_counts"]
    assert (counts["failed"], counts["completed"]) == (len(failed), 200 - len(failed))
    led = await ledger(client)
    assert led["batch_items"] == 200 - len(failed)  # failed items are not billed
    assert Decimal(led["total_cost_usd"]) == Decimal(repr(b["usage"]["cost"]))
    return sorted(r["custom_id"] for r in failed)


async def test_item_failures_follow_the_rate_and_the_seed(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    first = await _failed_ids(sim_client, sim_clock, seed=1)
    again = await _failed_ids(sim_client, sim_clock, seed=1)
    other = await _failed_ids(sim_client, sim_clock, seed=2)
    assert first == again
    assert first != other
    assert 30 <= len(first) <= 90
    assert 30 <= len(other) <= 90


async def _validation(sim_client: SimClientFactory, clock: FakeClock, seed: int) -> str | None:
    client = await sim_client(Scenario(rate_batch_invalid=0.5), seed=seed)
    b = await finished(client, clock, batch_body(5, prefix=f"s{seed}"))
    if b["status"] == "completed":
        return None
    assert b["status"] == "failed"
    assert b["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    assert b["results"] is None
    assert b["usage"] is None
    assert b["finalized_at"] is not None
    led = await ledger(client)
    assert (led["batches"], led["batch_items"], Decimal(led["total_cost_usd"])) == (1, 0, 0)
    message: str = b["error"]["message"]
    return message


async def test_whole_batch_validation_failures_follow_the_rate_and_the_seed(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    outcomes = [await _validation(sim_client, sim_clock, seed) for seed in range(12)]
    assert outcomes == [await _validation(sim_client, sim_clock, seed) for seed in range(12)]
    failed = [m for m in outcomes if m is not None]
    assert 0 < len(failed) < 12
    for m in failed:
        assert m.startswith("Request at line ")
        assert "(custom_id 's" in m


async def test_one_invalid_item_fails_the_whole_batch_after_the_202(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client()
    body = batch_body(4)
    body["requests"][2]["body"]["messages"] = []
    b = await finished(client, sim_clock, body)
    assert b["status"] == "failed"
    assert b["error"]["message"] == (
        "Request at line 3 (custom_id 'rec-00002'): messages: must be a non-empty array"
    )
    body = batch_body(2, max_tokens=10_000_000)
    b = await finished(client, sim_clock, body)
    assert b["status"] == "failed"
    assert "maximum context length" in b["error"]["message"]


async def test_a_batch_that_expires_keeps_its_finished_items(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    sc = Scenario(batch_validating_s=0, batch_in_progress_s=100, batch_window_s=50)
    client = await sim_client(sc)
    b = await finished(client, sim_clock, batch_body(10))
    assert b["status"] == "expired"
    assert b["error"] is None
    ok = [r for r in b["results"] if r["error"] is None]
    expired = [r for r in b["results"] if r["error"] is not None]
    assert len(ok) == 5
    assert len(expired) == 5
    assert {r["error"]["type"] for r in expired} == {"batch_expired"}
    assert all(r["response"] is None for r in expired)
    assert b["request_counts"] == {"total": 10, "completed": 5, "failed": 5}
    led = await ledger(client)
    assert led["batch_items"] == 5
    assert Decimal(led["total_cost_usd"]) == Decimal(repr(b["usage"]["cost"])) > 0
    pages = await get_json(client, f"{BATCHES}/{b['id']}/results")
    assert len(pages["data"]) == 10


async def test_expiry_rate_draws_by_seed(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(rate_batch_expire=1.0))
    b = await finished(client, sim_clock, batch_body(20))
    assert b["status"] == "expired"
    assert 0 < b["request_counts"]["completed"] < 20  # stopped between 25 % and 75 % through


# --- delete, no cancel, list ------------------------------------------------------------------


async def test_delete_is_409_while_running_and_purges_when_finished(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(batch_not_found_s=0))
    b = await submitted(client, batch_body(3))
    path = f"{BATCHES}/{b['id']}"
    for step in (0, 1.5):  # validating, then in_progress
        sim_clock.advance(step)
        resp = await client.delete(path, headers=AUTH)
        assert resp.status == 409
        assert "only a finished batch can be deleted" in (await resp.json())["error"]["message"]
    sim_clock.advance(3600)
    cost = Decimal((await ledger(client))["total_cost_usd"])
    resp = await client.delete(path, headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {
        "id": b["id"],
        "object": "batch",
        "deletion": {"openrouter": "deleted"},
    }
    await get_json(client, path, 404)
    assert (await client.delete(path, headers=AUTH)).status == 404
    assert (await get_json(client, BATCHES))["data"] == []
    assert Decimal((await ledger(client))["total_cost_usd"]) == cost > 0  # billing is kept


async def test_there_is_no_cancel(sim_client: SimClientFactory, sim_clock: FakeClock) -> None:
    client = await sim_client(Scenario(batch_not_found_s=0))
    b = await submitted(client, batch_body(3))
    for base in (BATCHES, "/api/beta/batches"):
        resp = await client.post(f"{base}/{b['id']}/cancel", headers=AUTH)
        assert resp.status == 404
        assert not resp.content_type.endswith("json")  # a plain-text 404, as observed
    sim_clock.advance(3600)
    done = await get_json(client, f"{BATCHES}/{b['id']}")
    assert done["status"] == "completed"
    assert (await ledger(client))["batch_items"] == 3  # and billed in full


async def test_list_is_newest_first_with_paging_and_filters(
    sim_client: SimClientFactory, sim_clock: FakeClock
) -> None:
    client = await sim_client(Scenario(batch_not_found_s=0))
    ids = []
    for i in range(5):
        ids.append((await submitted(client, batch_body(1, prefix=f"l{i}")))["id"])
        sim_clock.advance(1)
    first = await get_json(client, BATCHES, limit="2")
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[4], ids[3], True)
    assert all("results" not in b for b in first["data"])
    rest = await get_json(client, BATCHES, limit="10", after=first["last_id"])
    assert [b["id"] for b in rest["data"]] == ids[::-1][2:]
    assert rest["has_more"] is False
    # 5 s after the first: a batch takes 3.5 s, so ids[0] and ids[1] are done, ids[2] finalizing
    done = await get_json(client, BATCHES, status="completed")
    assert [b["id"] for b in done["data"]] == [ids[1], ids[0]]
    both = await client.get(
        BATCHES, headers=AUTH, params=[("status", "completed"), ("status", "finalizing")]
    )
    assert [b["id"] for b in (await both.json())["data"]] == [ids[2], ids[1], ids[0]]
    assert (await client.get(BATCHES, headers=AUTH, params={"limit": "101"})).status == 400
    beta = await get_json(client, "/api/beta/batches")
    assert len(beta["data"]) == 5
