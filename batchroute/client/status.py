"""Client stage, failures: an HTTP status, an error body or a broken connection → the error tree.

`classify_error` is the one function that decides retry / reject / stop for every error the
API can give (status line, 200 body, stream chunk). It sends nothing and parses no answers.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from batchroute.errors import (
    AuthError,
    CreditsExhausted,
    DailyCapReached,
    RateLimited,
    RejectedError,
    RetryableError,
    UpstreamError,
    without_secrets,
)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 524, 529})

# Typed error codes (openrouter-api.md §2.2) → HTTP status, for errors whose `code` is a string.
_TYPE_STATUS = {
    "authentication": 401,
    "payment_required": 402,
    "permission_denied": 403,
    "not_found": 404,
    "rate_limit_exceeded": 429,
    "provider_unavailable": 502,
    "provider_overloaded": 503,
    "timeout": 504,
    "server": 500,
    "context_length_exceeded": 400,
    "invalid_request": 400,
}


def _next_utc_midnight() -> float:
    return (time.time() // 86_400 + 1) * 86_400


def _status_of(code: Any, error: dict[str, Any]) -> int:
    """The HTTP status an error stands for: `code` may be an int, a digit string or a name."""
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if str(code).isascii() and str(code).isdigit():  # not "²": isdigit() but no int()
        return int(str(code))
    meta = error.get("metadata")
    kind = meta.get("error_type") if isinstance(meta, dict) else None
    return _TYPE_STATUS.get(str(kind), _TYPE_STATUS.get(str(code), 502))


def _retry_after(headers: Any, error: dict[str, Any]) -> float | None:
    """Seconds to wait, from Retry-After (seconds or HTTP date), the body, or X-RateLimit-Reset."""
    raw = headers.get("Retry-After") if headers is not None else None
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    avail = error.get("availability")
    if isinstance(avail, dict) and isinstance(avail.get("retry_after"), int | float):
        return float(avail["retry_after"])
    reset = headers.get("X-RateLimit-Reset") if headers is not None else None
    if reset:
        try:
            return max(0.0, float(reset) / 1000 - time.time())
        except ValueError:
            return None
    return None


def _message(error: dict[str, Any]) -> str:
    """The useful text: OpenRouter often says 'Provider returned error' and hides the cause."""
    msg = str(error.get("message") or "unknown error")
    meta = error.get("metadata")
    if isinstance(meta, dict) and meta.get("raw"):
        raw = meta["raw"]
        if isinstance(raw, str):
            try:
                parsed = orjson.loads(raw)
                raw = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
            except orjson.JSONDecodeError:
                pass
        if isinstance(raw, dict):
            raw = raw.get("message") or raw
        msg = f"{msg}: {str(raw)[:300]}"
    return msg[:1000]


def _error_type(error: dict[str, Any], status: int) -> str:
    meta = error.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("error_type"), str):
        return str(meta["error_type"])
    avail = error.get("availability")
    if isinstance(avail, dict) and isinstance(avail.get("code"), str):
        return str(avail["code"])
    if isinstance(error.get("error_type"), str):
        return str(error["error_type"])
    return f"http_{status}" if status else "error"


def classify_error(
    status: int, error: dict[str, Any], headers: Any, *, model: str, in_body: bool = False
) -> UpstreamError:
    """Map an OpenRouter error (from the status line or hidden in a 200 body) to our tree.

    A 200 body carries the real status in `error.code`, which may also be a string.
    """
    if in_body or not status:
        status = _status_of(error.get("code"), error)
    msg = _message(error)
    kind = _error_type(error, status)
    kw: dict[str, Any] = {"model": model, "status": status, "error_type": kind, "in_body": in_body}
    avail = error.get("availability")
    if status == 401:
        return AuthError(msg, **kw)
    if status == 402:
        return CreditsExhausted(msg, **kw)
    if status == 429 and "per-day" in msg:
        reset = headers.get("X-RateLimit-Reset") if headers is not None else None
        # The in-body form carries no header: the cap resets at the next UTC midnight.
        reset_at = float(reset) / 1000 if reset and str(reset).isdigit() else _next_utc_midnight()
        return DailyCapReached(msg, reset_at=reset_at, **{**kw, "error_type": "free_daily_cap"})
    retry_after = _retry_after(headers, error)
    if isinstance(avail, dict) and isinstance(avail.get("retryable"), bool):
        # Newer availability errors say themselves whether waiting helps (§2.5).
        if not avail["retryable"]:
            return RejectedError(msg, **kw)
        cls = RateLimited if status == 429 else RetryableError
        return cls(msg, retry_after=retry_after, **kw)
    if status == 429:
        return RateLimited(msg, retry_after=retry_after, **kw)
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableError(msg, retry_after=retry_after, **kw)
    # 400 (context length, bad params), 403 (moderation, region), 404 (no endpoints), 413, 422:
    # the same request to the same model will fail again, so move on to the next model.
    return RejectedError(msg, **kw)


def _transport_error(exc: aiohttp.ClientError, model: str, gen_id: str | None) -> RetryableError:
    """A connection that failed. `unreachable`: it never connected (refused, DNS), so nothing
    was sent and nothing can be billed; `connection`: it broke once the request was out."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryableError(
            f"cannot connect: {type(exc).__name__}", model=model, error_type="unreachable"
        )
    return RetryableError(
        f"connection error: {type(exc).__name__}",
        model=model,
        error_type="connection",
        generation_id=gen_id,
    )


def generation_id_of(headers: Any) -> str | None:
    """The X-Generation-Id header, cleaned of the key as every body is (`session.read_body`):
    the one header whose text is stored (`generation_id`), and a gateway may echo anything."""
    gen_id = headers.get("X-Generation-Id") if headers is not None else None
    return without_secrets(gen_id) if gen_id else gen_id


def _malformed(message: str, *, model: str, status: int, headers: Any) -> RetryableError:
    # Generated (and perhaps billed) but unreadable: the header lets /generation tell the cost.
    gen_id = generation_id_of(headers)
    return RetryableError(
        message, model=model, status=status, error_type="malformed_response", generation_id=gen_id
    )


def _status_error(status: int, body: bytes, headers: Any, *, model: str) -> UpstreamError:
    """The error a non-200 answer stands for (its body is a JSON error envelope, or not)."""
    try:
        doc = orjson.loads(body.lstrip()) if body.strip() else {}
    except orjson.JSONDecodeError:
        doc = {}
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        error = {"code": status, "message": body[:200].decode("utf-8", "replace")}
    err = classify_error(status, error, headers, model=model)
    err.generation_id = generation_id_of(headers)  # a search may be billed before a 5xx
    return err
