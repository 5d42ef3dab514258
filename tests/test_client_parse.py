"""Response classification on bodies the simulator does not produce (pure functions, no server)."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest

from batchroute.client import classify_error, parse_completion, parse_usage
from batchroute.errors import (
    CreditsExhausted,
    DailyCapReached,
    RateLimited,
    RejectedError,
    RetryableError,
)
from batchroute.types import Usage


def body(doc: object) -> bytes:
    return orjson.dumps(doc)


def test_string_error_code_is_classified_by_its_type() -> None:
    err = {"code": "payment_required", "message": "no credits"}
    assert isinstance(classify_error(200, err, {}, model="m", in_body=True), CreditsExhausted)
    err = {
        "code": "server_error",
        "message": "x",
        "metadata": {"error_type": "provider_overloaded"},
    }
    e = classify_error(200, err, {}, model="m", in_body=True)
    assert type(e) is RetryableError
    assert e.status == 503


def test_availability_retryable_flag_decides() -> None:
    retry = {"code": 404, "message": "busy", "availability": {"code": "x", "retryable": True}}
    assert isinstance(classify_error(404, retry, {}, model="m"), RetryableError)
    capacity = {
        "code": 429,
        "message": "full",
        "availability": {"retryable": True, "retry_after": 3},
    }
    e = classify_error(429, capacity, {}, model="m")
    assert isinstance(e, RateLimited)
    assert e.retry_after == 3
    final = {"code": 503, "message": "gone", "availability": {"retryable": False}}
    assert type(classify_error(503, final, {}, model="m")) is RejectedError


def test_daily_cap_in_a_body_resets_at_next_utc_midnight() -> None:
    err = {"code": 429, "message": "Rate limit exceeded: free-models-per-day"}
    e = classify_error(200, err, {}, model="m", in_body=True)
    assert isinstance(e, DailyCapReached)
    assert e.reset_at is not None
    assert 0 < e.reset_at - time.time() <= 86_400
    assert e.reset_at % 86_400 == 0


@pytest.mark.parametrize(
    "doc",
    [
        {"choices": ["not a dict"]},
        {"choices": [{"message": "text"}]},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many"}},
        {"choices": [{"message": {"content": "x"}}], "usage": {"cost": "free"}},
    ],
)
def test_odd_shapes_are_retryable_malformed_responses(doc: dict) -> None:
    with pytest.raises(RetryableError) as exc:
        parse_completion(body(doc), 200, {"X-Generation-Id": "gen-1"}, model="m")
    assert exc.value.error_type == "malformed_response"
    assert exc.value.generation_id == "gen-1"


def test_an_error_in_any_choice_is_raised() -> None:
    doc = {
        "choices": [
            {"message": {"content": "fine"}, "finish_reason": "stop"},
            {
                "message": {"content": ""},
                "finish_reason": "error",
                "error": {"code": 502, "message": "Provider returned error"},
            },
        ]
    }
    with pytest.raises(RetryableError) as exc:
        parse_completion(body(doc), 200, {}, model="m")
    assert exc.value.status == 502


def test_non_string_content_is_treated_as_empty() -> None:
    doc = {"model": "m", "choices": [{"message": {"content": None}, "finish_reason": "stop"}]}
    c = parse_completion(body(doc), 200, {}, model="m")
    assert c.content is None


# --- usage: BYOK, details, missing usage, costs passed through unjudged -------------------------


def answer(usage: object = None, **extra: object) -> bytes:
    doc: dict[str, object] = {
        "id": "gen-1",
        "model": "m",
        "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
        **extra,
    }
    if usage is not None:
        doc["usage"] = usage
    return body(doc)


def test_byok_usage_keeps_the_fee_and_the_upstream_cost() -> None:
    usage = {
        "prompt_tokens": 405,
        "completion_tokens": 2600,
        "cost": 0.000057447,
        "is_byok": True,
        "cost_details": {"upstream_inference_cost": 0.001148945},
        "completion_tokens_details": {"reasoning_tokens": 1200, "image_tokens": 0},
        "server_tool_use_details": {"web_search_requests": 2},
    }
    u = parse_completion(answer(usage), 200, {}, model="m").usage
    assert u == Usage(
        prompt_tokens=405,
        completion_tokens=2600,
        cost=Decimal("0.000057447"),
        upstream_cost=Decimal("0.001148945"),
        is_byok=True,
        reasoning_tokens=1200,
        web_search_requests=2,
    )
    assert u.billed == Decimal("0.001206392")


def test_null_and_missing_details_are_tolerated() -> None:
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "cost": "0.0001",  # a string amount is exact too
        "cost_details": None,
        "completion_tokens_details": None,
        "server_tool_use": {"web_search_requests": 3},
    }
    u = parse_completion(answer(usage), 200, {}, model="m").usage
    assert u == Usage(
        prompt_tokens=5, completion_tokens=1, cost=Decimal("0.0001"), web_search_requests=3
    )
    assert u.billed == Decimal("0.0001")
    assert u.present


def test_byok_without_upstream_cost_has_no_known_bill() -> None:
    u = parse_completion(answer({"cost": 0.00001, "is_byok": True}), 200, {}, model="m").usage
    assert (u.cost, u.upstream_cost, u.is_byok) == (Decimal("0.00001"), None, True)
    assert u.billed is None


@pytest.mark.parametrize("usage", [None, {"usage": None}])
def test_an_answer_without_usage_says_so(usage: dict | None) -> None:
    raw = answer(**usage) if usage else answer()
    u = parse_completion(raw, 200, {}, model="m").usage
    assert u == Usage(present=False)
    assert (u.prompt_tokens, u.completion_tokens, u.cost, u.billed) == (0, 0, None, None)


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (b"-0.5", Decimal("-0.5")),
        (b'"NaN"', Decimal("NaN")),
        (b"1e300", Decimal("1E+300")),
        (b"100000000000000000000000", Decimal("1E+23")),  # orjson reads a huge int as a float
        (b'"123456789012345678901234567890.5"', Decimal("123456789012345678901234567890.5")),
        (b"7", Decimal(7)),
        (b"0", Decimal(0)),
    ],
)
def test_costs_are_passed_through_unjudged(cost: bytes, expected: Decimal) -> None:
    raw = answer({"cost": "COST"}).replace(b'"COST"', cost)
    u = parse_completion(raw, 200, {}, model="m").usage
    assert u.cost is not None
    if expected.is_nan():
        assert u.cost.is_nan()
    else:
        assert u.cost == expected


@pytest.mark.parametrize("cost", [{"usd": 1}, [0.1], True, None])
def test_a_cost_that_is_no_number_is_unknown(cost: object) -> None:
    u = parse_completion(answer({"prompt_tokens": 3, "cost": cost}), 200, {}, model="m").usage
    assert u.cost is None
    assert u.prompt_tokens == 3


def test_error_in_a_200_carries_the_byok_bill() -> None:
    error = {"code": 502, "message": "Provider returned error"}
    usage = {"cost": 0.001, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.02}}
    with pytest.raises(RetryableError) as exc:
        parse_completion(body({"id": "gen-9", "error": error, "usage": usage}), 200, {}, model="m")
    assert exc.value.cost == Decimal("0.021")
    assert exc.value.generation_id == "gen-9"
    usage = {"cost": 0.001, "is_byok": True}  # upstream unknown: the bill is unknown
    with pytest.raises(RetryableError) as exc:
        parse_completion(body({"error": error, "usage": usage}), 200, {}, model="m")
    assert exc.value.cost is None


def test_parse_usage_is_the_one_parser() -> None:
    assert parse_usage(None) == Usage(present=False)
    assert parse_usage({"prompt_tokens": 2, "cost": 0.1}) == Usage(2, 0, Decimal("0.1"))
