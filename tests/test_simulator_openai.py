"""The official `openai` SDK against SimulatorThread: shapes, usage.cost and error mapping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from batchroute.simulator import Scenario, SimulatorThread

MODEL = "openai/gpt-4o-mini"
MESSAGES: Any = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(Scenario(generation_delay_s=0), seed=7) as thread:
        yield thread


@pytest.fixture
def sdk(sim: SimulatorThread) -> Iterator[openai.OpenAI]:
    sim.set_scenario(Scenario(generation_delay_s=0))
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, timeout=5)
    yield client
    client.close()


def _cost(usage: Any) -> Decimal:
    return Decimal(repr(usage.model_extra["cost"]))


def test_plain_completion(sim: SimulatorThread, sdk: openai.OpenAI) -> None:
    before = Decimal(sim.ledger()["total_cost_usd"])
    r = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=64)
    assert r.model == MODEL
    assert r.id.startswith("gen-")
    assert r.choices[0].message.content is not None
    assert r.choices[0].message.content.startswith(f"[sim {MODEL}] ")
    assert r.usage is not None
    assert r.usage.completion_tokens <= 64
    assert _cost(r.usage) > 0
    after = Decimal(sim.ledger()["total_cost_usd"])
    assert after - before == _cost(r.usage)


def test_streaming_completion(sim: SimulatorThread, sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(f"[sim {MODEL}] ")
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert chunks[-1].model == MODEL
    gen = sim.ledger()["generations"][-1]
    assert gen["id"] == chunks[-1].id
    assert Decimal(gen["cost_usd"]) == _cost(usage)
    assert usage.completion_tokens == gen["completion_tokens"]


def test_generation_endpoint_via_sdk(sdk: openai.OpenAI) -> None:
    r = sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    data = sdk.get(f"/generation?id={r.id}", cast_to=object)
    assert isinstance(data, dict)
    assert data["data"]["id"] == r.id


@pytest.mark.parametrize(
    ("fault", "exc", "status"),
    [
        ("401", openai.AuthenticationError, 401),
        ("402", openai.APIStatusError, 402),
        ("400_context", openai.BadRequestError, 400),
        ("403", openai.PermissionDeniedError, 403),
        ("404", openai.NotFoundError, 404),
        ("429", openai.RateLimitError, 429),
        ("429_daily", openai.RateLimitError, 429),
        ("500", openai.InternalServerError, 500),
        ("502", openai.InternalServerError, 502),
        ("503", openai.InternalServerError, 503),
    ],
)
def test_error_kinds_reach_the_sdk(
    sim: SimulatorThread, sdk: openai.OpenAI, fault: str, exc: type[Exception], status: int
) -> None:
    sim.set_scenario(Scenario.from_dict({"script": {"*": [fault]}}))
    with pytest.raises(exc) as info:
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert isinstance(info.value, openai.APIStatusError)
    assert info.value.status_code == status


def test_unknown_model_is_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="is not a valid model ID"):
        sdk.chat.completions.create(model="nope/nope", messages=MESSAGES)


def test_mid_stream_error_raises(sim: SimulatorThread, sdk: openai.OpenAI) -> None:
    sim.set_scenario(Scenario.from_dict({"script": {"*": ["200_error"]}}))
    with pytest.raises(openai.APIError):
        list(sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))


def test_reset_and_malformed_surface_as_errors(sim: SimulatorThread, sdk: openai.OpenAI) -> None:
    sim.set_scenario(Scenario.from_dict({"script": {"*": ["reset", "malformed"]}}))
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(json.JSONDecodeError):  # the truncated body
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_hang_times_out_and_thread_stops_quickly() -> None:
    scenario = Scenario.from_dict({"script": {"*": ["hang"]}})
    started = time.perf_counter()
    with SimulatorThread(scenario) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0, timeout=0.3)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        client.close()
    assert time.perf_counter() - started < 3
