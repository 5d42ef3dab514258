"""Client stage, answers: a whole 200 body or a `usage` object → `Completion` / `Usage`.

Every shape problem is a retryable `malformed_response`; errors hidden in a body go through
`classify_error`. It sends nothing and judges no amount (the runner checks costs).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson

from batchroute.client.status import _malformed, classify_error, generation_id_of
from batchroute.errors import RetryableError
from batchroute.types import Completion, Usage
from batchroute.usd import ceil_usd


def _decimal(raw: Any) -> Decimal | None:
    """A reported amount, exact; None if it is no number at all (absent, null, a bool, a dict).

    No judgement: a negative, NaN or huge amount passes through (the runner checks it). A
    string that is no decimal raises `InvalidOperation`: the caller calls the body malformed.
    """
    kind = type(raw)
    if kind is float:  # orjson's shortest repr is the decimal the server wrote (≤ 15 digits)
        return Decimal(repr(raw))
    if kind is int or kind is str:
        return Decimal(raw)
    return None


def _cost(raw: Any) -> Decimal | None:
    """A reported cost as the store will keep it: `_decimal`, rounded up to 12 places (a cost
    with more decimals must never be stored below the bill)."""
    d = _decimal(raw)
    return None if d is None else ceil_usd(d)


_NO_USAGE = Usage(present=False)

MAX_COUNT = 10**9
"""More tokens (or searches) than any call has: a count above it, or below 0, is garbage, not
usage. Priced as it came it was booked as a bill (~$1.6e14 for 1e20 prompt tokens) and, past
BIGINT, crashed every run at its journal (audit5); refused, the answer is malformed."""


def _count(raw: Any) -> int:
    """A count of `usage` (absent: 0); ValueError when it is out of range (`MAX_COUNT`)."""
    n = int(raw or 0)
    if 0 <= n <= MAX_COUNT:
        return n
    raise ValueError("a usage count out of range")


def byok_of(flag: Any, cost: Decimal | None, upstream: Decimal | None) -> bool:
    """Whether a bill is BYOK (`cost` the fee, the provider's `upstream` charge on top).
    `is_byok` says so; older shapes omit it (§1.2): then a `cost` below the upstream figure
    means the provider was paid elsewhere (without BYOK the two are equal, or `cost` is the
    higher when OpenRouter-side extras ran). Read as BYOK, a discount would overcount, never
    undercount."""
    if flag is not None:
        return flag is True
    return (
        cost is not None
        and upstream is not None
        and cost.is_finite()
        and upstream.is_finite()
        and cost < upstream
    )


def parse_usage(raw: Any) -> Usage:
    """The `usage` object of an answer or of a stream's usage chunk (§1.2); all `*_details`
    may be null or missing. Not an object → `Usage(present=False)`. Raises ValueError,
    TypeError or ArithmeticError on a count or amount that is not a number.
    """
    if not isinstance(raw, dict):
        return _NO_USAGE
    cost_raw = raw.get("cost")
    # `_cost` inlined for a float, the usual shape: two calls fewer an answer (issue 11)
    cost = ceil_usd(Decimal(repr(cost_raw))) if type(cost_raw) is float else _cost(cost_raw)
    upstream = None
    details = raw.get("cost_details")
    if isinstance(details, dict):
        up = details.get("upstream_inference_cost")
        # Without BYOK both are usually the same number: convert it once.
        same = up == cost_raw and type(up) is type(cost_raw)
        upstream = cost if same else _cost(up)
    details = raw.get("completion_tokens_details")
    reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, dict) else 0
    details = raw.get("server_tool_use") or raw.get("server_tool_use_details")
    searches = _count(details.get("web_search_requests")) if isinstance(details, dict) else 0
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    if not (0 <= prompt <= MAX_COUNT and 0 <= completion <= MAX_COUNT):  # (inline: hot path)
        raise ValueError("a usage count out of range")
    return Usage(  # positional (its fields' order): half the cost of keywords (issue 11)
        prompt,  # prompt_tokens
        completion,  # completion_tokens
        cost,
        upstream,  # upstream_cost
        byok_of(raw.get("is_byok"), cost, upstream),  # is_byok
        reasoning,  # reasoning_tokens
        searches,  # web_search_requests
    )


def _billed(raw: Any) -> Decimal | None:
    """What a failed answer's usage says it billed in all (BYOK: fee + upstream), if it says."""
    try:
        return parse_usage(raw).billed
    except (AttributeError, TypeError, ValueError, ArithmeticError):
        return None


_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


def _whole(match: re.Match[bytes]) -> bytes:
    """An escaped backslash or a surrogate pair as it is; a lone surrogate → U+FFFD."""
    found = match.group()
    return found if len(found) != 6 else b"\\ufffd"


def loads_lenient(body: bytes) -> Any:
    """`orjson.loads`, and for a document holding half a character (a lone surrogate escape,
    which JSON's grammar allows and `JSON.stringify` writes for a string cut inside a pair; or
    bytes that are not UTF-8, an answer cut inside a character) the same document with each
    half character read as U+FFFD. Refused, a paid answer was malformed: sent and paid again,
    the same every time (audit6). Raises `orjson.JSONDecodeError` when it is not JSON at all.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").encode()  # bytes cut inside a character
        return orjson.loads(_ESCAPES.sub(_whole, text))


def parse_completion(body: bytes, status: int, headers: Any, *, model: str) -> Completion:
    """Turn a 200 response body into a Completion, or raise the error hidden inside it.

    Every shape problem (not JSON, wrong types, a cost that is not a number) is a retryable
    `malformed_response`, never a crash of the run.
    """
    try:
        doc = loads_lenient(body.lstrip())  # keep-alive whitespace may precede the JSON
    except orjson.JSONDecodeError as exc:
        raise _malformed(
            f"malformed JSON in response: {exc}", model=model, status=status, headers=headers
        ) from None
    if not isinstance(doc, dict):
        raise _malformed(
            "response is not a JSON object", model=model, status=status, headers=headers
        )
    try:
        return _completion(doc, status, headers, model=model)
    except (AttributeError, TypeError, ValueError, ArithmeticError) as exc:
        raise _malformed(
            f"unexpected response shape: {type(exc).__name__}",
            model=model,
            status=status,
            headers=headers,
        ) from None


def _completion(doc: dict[str, Any], status: int, headers: Any, *, model: str) -> Completion:
    gen_id = doc.get("id") or generation_id_of(headers)
    usage_raw = doc.get("usage")
    choices = doc.get("choices")
    error = doc.get("error")
    if not isinstance(error, dict):
        error = None
    if isinstance(choices, list):  # §2.3: an error may sit in any choice
        for c in choices:  # every one: a choice that is no object makes the body malformed
            if (c.get("finish_reason") == "error" or isinstance(c.get("error"), dict)) and (
                error is None
            ):
                error = c.get("error") or {}
    if error is not None:
        err = classify_error(status, error, headers, model=model, in_body=True)
        err.cost, err.generation_id = _billed(usage_raw), gen_id
        raise err
    usage = parse_usage(usage_raw)
    if not choices or not isinstance(choices, list):
        raise RetryableError(
            "response has no choices",
            model=model,
            status=status,
            error_type="no_choices",
            cost=usage.billed,
            generation_id=gen_id,
        )
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content")
    calls = message.get("tool_calls")
    if calls:  # a function-calling job's answer is its calls (audit6): kept, with any text
        content = with_calls(content, calls)
    return Completion(  # positional (its fields' order), as `Usage` above
        content if isinstance(content, str) else None,  # content
        choice.get("finish_reason"),
        choice.get("native_finish_reason"),
        str(doc.get("model") or model),  # model
        doc.get("provider"),
        gen_id,  # generation_id
        usage,
        status,  # http_status
    )


def with_calls(content: Any, calls: Any) -> str:
    """The output of an answer that called tools: `{"content": text or null, "tool_calls":
    [...]}` as JSON, whatever else the model wrote beside the calls (the calls are the answer;
    a sentence before them is kept too). Thrown away, each was paid for and lost (audit6)."""
    text = content if isinstance(content, str) and content.strip() else None
    return orjson.dumps({"content": text, "tool_calls": calls}).decode()


def _choice_error(choices: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The error of the first choice that failed (`finish_reason: "error"`), if one did."""
    for choice in choices:
        if choice.get("finish_reason") == "error" or isinstance(choice.get("error"), dict):
            error = choice.get("error")
            return error if isinstance(error, dict) else {}
    return None
