"""OpenRouterClient against the simulator on a real loopback port: answers and the error tree.

Each simulator fault must come back as the `batchroute.errors` class that tells the runner what
to do next (retry, next model, stop the run), and the API key must never leak into a repr or
an exception message.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from conftest import SIM_EPOCH, SimClientFactory

from batchroute.client import OpenRouterClient, parse_completion
from batchroute.errors import (
    AuthError,
    CreditsExhausted,
    DailyCapReached,
    FatalUpstreamError,
    RateLimited,
    RejectedError,
    RetryableError,
    UpstreamError,
)
from batchroute.simulator import Scenario, SimulatorThread
from batchroute.simulator.responses import next_utc_midnight_ms

KEY = "sk-or-v1-TOPSECRET-0123456789abcdef"
MODEL = "openai/gpt-4o-mini"


def payload(content: str = "Translate into French: hello", model: str = MODEL) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1000,
        "usage": {"include": True},
    }


def scripted(*steps: str | dict[str, Any]) -> Scenario:
    return Scenario.from_dict({"script": {"*": list(steps)}})


async def base_url(sim_client: SimClientFactory, scenario: Scenario | None = None) -> str:
    client = await sim_client(scenario)
    return str(client.make_url("/api/v1"))


async def call_fault(sim_client: SimClientFactory, fault: str | dict[str, Any]) -> UpstreamError:
    """Send one request whose answer is the scripted fault; return what the client raised."""
    url = await base_url(sim_client, scripted(fault))
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        with pytest.raises(UpstreamError) as info:
            await client.complete(payload())
    return info.value


def assert_no_key(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), *map(str, exc.args)):
        assert KEY not in text
        assert "TOPSECRET" not in text


# --- normal answers ----------------------------------------------------------------------------


async def test_completion_has_content_model_usage_and_exact_ledger_cost(
    sim_client: SimClientFactory,
) -> None:
    sim = await sim_client()
    url = str(sim.make_url("/api/v1"))
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        c = await client.complete(payload())
    assert c.content is not None
    assert c.content.startswith(f"[sim {MODEL}] ")
    assert c.model == MODEL
    assert c.provider == "OpenAI"
    assert c.finish_reason == "stop"
    assert c.generation_id is not None
    assert c.generation_id.startswith("gen-")
    assert c.usage.prompt_tokens > 0
    assert c.usage.completion_tokens > 0
    ledger = await (await sim.get("/sim/ledger")).json()
    assert ledger["calls"] == 1
    assert isinstance(c.usage.cost, Decimal)
    assert c.usage.cost == Decimal(ledger["total_cost_usd"]) > 0
    assert c.usage.cost == Decimal(ledger["generations"][0]["cost_usd"])


async def test_leading_whitespace_before_json_is_parsed(sim_client: SimClientFactory) -> None:
    url = await base_url(sim_client, scripted("leading_ws"))
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        c = await client.complete(payload())
    assert c.content is not None
    assert c.content.startswith(f"[sim {MODEL}]")
    assert c.usage.cost is not None
    assert c.usage.cost > 0


# --- faults → the error tree -------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after_from_header(
    sim_client: SimClientFactory,
) -> None:
    err = await call_fault(sim_client, {"fault": "429", "retry_after_s": 7})
    assert type(err) is RateLimited
    assert err.status == 429
    assert err.retry_after == 7.0
    assert err.model == MODEL


async def test_429_daily_cap_is_not_retried_and_carries_reset(
    sim_client: SimClientFactory,
) -> None:
    err = await call_fault(sim_client, "429_daily")
    assert isinstance(err, DailyCapReached)
    assert not isinstance(err, RetryableError)  # retrying before the reset only burns calls
    assert isinstance(err, RejectedError)
    assert err.reset_at == next_utc_midnight_ms(SIM_EPOCH) / 1000
    assert err.error_type == "free_daily_cap"


@pytest.mark.parametrize(
    ("fault", "status"),
    [("408", 408), ("500", 500), ("502", 502), ("503", 503)],
)
async def test_transient_statuses_are_retryable(
    sim_client: SimClientFactory, fault: str, status: int
) -> None:
    err = await call_fault(sim_client, fault)
    assert type(err) is RetryableError
    assert err.status == status


async def test_503_retry_after_is_honoured(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, {"fault": "503", "retry_after_s": 4})
    assert isinstance(err, RetryableError)
    assert err.retry_after == 4.0


async def test_502_message_includes_the_hidden_upstream_cause(
    sim_client: SimClientFactory,
) -> None:
    err = await call_fault(sim_client, "502")
    assert "upstream connect error" in str(err)


async def test_hang_answered_408_is_retryable(sim_client: SimClientFactory) -> None:
    """The simulator's fake sleep skips the hang; it then answers 408."""
    err = await call_fault(sim_client, "hang")
    assert type(err) is RetryableError
    assert err.status == 408


async def test_client_timeout_is_retryable() -> None:
    """A real hang (hang_s 2 s on the real clock) and a 0.2 s client timeout."""
    sc = Scenario.from_dict({"script": {"*": ["hang"]}, "hang_s": 2})
    with SimulatorThread(sc) as sim:
        async with OpenRouterClient(sim.base_url, KEY, timeout_s=0.2) as client:
            with pytest.raises(RetryableError) as info:
                await client.complete(payload())
    assert info.value.error_type == "timeout"
    assert info.value.status == 0
    assert_no_key(info.value)


async def test_connection_reset_is_retryable(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, "reset")
    assert type(err) is RetryableError
    assert err.error_type in {"connection", "malformed_response"}


async def test_malformed_json_is_retryable(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, "malformed")
    assert type(err) is RetryableError
    assert err.error_type == "malformed_response"


@pytest.mark.parametrize(("fault", "status"), [("400_context", 400), ("403", 403), ("404", 404)])
async def test_request_specific_refusals_are_rejected(
    sim_client: SimClientFactory, fault: str, status: int
) -> None:
    err = await call_fault(sim_client, fault)
    assert type(err) is RejectedError
    assert err.status == status


async def test_context_length_is_rejected_with_its_type(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, "400_context")
    assert err.error_type == "context_length_exceeded"


async def test_unknown_model_is_rejected(sim_client: SimClientFactory) -> None:
    url = await base_url(sim_client)
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        with pytest.raises(RejectedError) as info:
            await client.complete(payload(model="anthropic/claude-3.5-sonnet"))
    assert info.value.status == 400
    assert not isinstance(info.value, RetryableError)
    assert "claude-3.5-sonnet" in str(info.value)


async def test_401_is_auth_error(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, "401")
    assert type(err) is AuthError
    assert isinstance(err, FatalUpstreamError)
    assert err.status == 401


async def test_402_is_credits_exhausted(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, "402")
    assert type(err) is CreditsExhausted
    assert isinstance(err, FatalUpstreamError)
    assert err.status == 402


async def test_http_200_with_top_level_error_is_raised(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, "200_error")
    assert type(err) is RetryableError
    assert err.status == 502  # from error.code, not the 200 of the status line
    assert err.generation_id is not None


async def test_choice_level_finish_reason_error_is_raised(sim_client: SimClientFactory) -> None:
    err = await call_fault(sim_client, "choice_error")
    assert type(err) is RetryableError
    assert err.status == 502
    assert err.cost == Decimal(0)  # zero-completion insurance: reported, not charged


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (401, AuthError),
        ("402", CreditsExhausted),
        (429, RateLimited),
        ("503", RetryableError),
        (400, RejectedError),
        (404, RejectedError),
    ],
)
@pytest.mark.parametrize("where", ["top", "choice"])
def test_errors_inside_a_200_are_classified_by_error_code(
    code: int | str, cls: type[UpstreamError], where: str
) -> None:
    """The real status of an error in a 200 body is `error.code` (an int or a digit string)."""
    error = {"code": code, "message": "something went wrong"}
    if where == "top":
        doc: dict[str, Any] = {"id": "gen-1", "error": error}
    else:
        doc = {
            "id": "gen-1",
            "model": MODEL,
            "choices": [{"finish_reason": "error", "message": {"content": ""}, "error": error}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 0, "cost": 0},
        }
    with pytest.raises(UpstreamError) as info:
        parse_completion(orjson.dumps(doc), 200, {}, model=MODEL)
    assert type(info.value) is cls
    assert info.value.status == int(code)


# --- the key stays secret ----------------------------------------------------------------------


def test_repr_does_not_show_the_key() -> None:
    client = OpenRouterClient("http://127.0.0.1:1/api/v1", KEY)
    assert KEY not in repr(client)
    assert "TOPSECRET" not in repr(client)
    assert "TOPSECRET" not in str(client)


@pytest.mark.parametrize(
    "fault",
    ["401", "402", "429", "429_daily", "500", "502", "503", "200_error", "malformed", "reset"],
)
async def test_no_exception_message_contains_the_key(
    sim_client: SimClientFactory, fault: str
) -> None:
    assert_no_key(await call_fault(sim_client, fault))


async def test_connection_refused_is_retryable_unbilled_and_keyless() -> None:
    """Refused: nothing was sent, so nothing can be billed (`unreachable`, not `connection`,
    whose reservation would be kept as spend)."""
    async with OpenRouterClient("http://127.0.0.1:1/api/v1", KEY, timeout_s=2) as client:
        with pytest.raises(RetryableError) as info:
            await client.complete(payload())
    assert info.value.error_type == "unreachable"
    assert_no_key(info.value)


async def test_generation_cost_after_the_session_closed_is_unknown_not_an_error(
    sim_client: SimClientFactory,
) -> None:
    """A /generation poll that outlives its run finds the session closed: "not known yet" (the
    call stays booked at its reservation and the next run asks), not a RuntimeError."""
    url = await base_url(sim_client)
    async with OpenRouterClient(url, KEY, timeout_s=5) as client:
        answer = await client.complete(payload())
    assert answer.generation_id is not None
    assert await client.generation_cost(answer.generation_id) is None
