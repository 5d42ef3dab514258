"""Response classification on bodies the simulator does not produce (pure functions, no server)."""

from __future__ import annotations

import time

import orjson
import pytest

from batchroute.client import classify_error, parse_completion
from batchroute.errors import (
    CreditsExhausted,
    DailyCapReached,
    RateLimited,
    RejectedError,
    RetryableError,
)


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
