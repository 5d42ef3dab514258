"""Client stage: the OpenRouter HTTP API over one aiohttp session.

It sends a chat completion and returns a `Completion`, or raises the `UpstreamError` subclass
that says what the runner should do next. It classifies every response, HTTP 200 bodies
included (errors hide in them, see openrouter-api.md §2.3). It does not retry, and it knows
nothing of tiers, budget or storage. The API key lives only in the session's headers.
"""

from __future__ import annotations

import time
from decimal import Decimal
from email.utils import parsedate_to_datetime
from types import TracebackType
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
)
from batchroute.types import Completion, Usage

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
    if str(code).isdigit():
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
    kw: dict[str, Any] = {"model": model, "status": status, "error_type": kind}
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


def _cost(usage: dict[str, Any]) -> Decimal | None:
    raw = usage.get("cost")
    if raw is None or isinstance(raw, bool):
        return None
    # orjson gives a float; its shortest repr is the decimal the server wrote (≤ 15 digits).
    return Decimal(repr(raw)) if isinstance(raw, float) else Decimal(str(raw))


def _malformed(message: str, *, model: str, status: int, headers: Any) -> RetryableError:
    # Generated (and perhaps billed) but unreadable: the header lets /generation tell the cost.
    gen_id = headers.get("X-Generation-Id") if headers is not None else None
    return RetryableError(
        message, model=model, status=status, error_type="malformed_response", generation_id=gen_id
    )


def parse_completion(body: bytes, status: int, headers: Any, *, model: str) -> Completion:
    """Turn a 200 response body into a Completion, or raise the error hidden inside it.

    Every shape problem (not JSON, wrong types, a cost that is not a number) is a retryable
    `malformed_response`, never a crash of the run.
    """
    try:
        doc = orjson.loads(body.lstrip())  # keep-alive whitespace may precede the JSON
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
    gen_id = doc.get("id") or (headers.get("X-Generation-Id") if headers is not None else None)
    usage_raw = doc.get("usage")
    usage_doc: dict[str, Any] = usage_raw if isinstance(usage_raw, dict) else {}
    cost = _cost(usage_doc) if usage_doc else None
    choices = doc.get("choices")
    errors = [doc["error"]] if isinstance(doc.get("error"), dict) else []
    if isinstance(choices, list):  # §2.3: an error may sit in any choice
        errors += [
            c.get("error") or {}
            for c in choices
            if c.get("finish_reason") == "error" or isinstance(c.get("error"), dict)
        ]
    if errors:
        err = classify_error(status, errors[0], headers, model=model, in_body=True)
        err.cost, err.generation_id = cost, gen_id
        raise err
    if not choices or not isinstance(choices, list):
        raise RetryableError(
            "response has no choices",
            model=model,
            status=status,
            error_type="no_choices",
            cost=cost,
            generation_id=gen_id,
        )
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content")
    usage = Usage(
        prompt_tokens=int(usage_doc.get("prompt_tokens") or 0),
        completion_tokens=int(usage_doc.get("completion_tokens") or 0),
        cost=cost,
    )
    return Completion(
        content=content if isinstance(content, str) else None,
        finish_reason=choice.get("finish_reason"),
        native_finish_reason=choice.get("native_finish_reason"),
        model=str(doc.get("model") or model),
        provider=doc.get("provider"),
        generation_id=gen_id,
        usage=usage,
        http_status=status,
    )


class OpenRouterClient:
    """One aiohttp session to an OpenRouter-compatible base URL.

    Usage::

        async with OpenRouterClient(base_url, api_key, timeout_s=60) as client:
            completion = await client.complete({"model": ..., "messages": [...], ...})
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 60,
        title: str = "batchroute",
        referer: str | None = None,
        max_connections: int = 256,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "X-OpenRouter-Title": title,
        }
        if referer:
            self._headers["HTTP-Referer"] = referer
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenRouterClient({self.base_url!r})"

    async def __aenter__(self) -> OpenRouterClient:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=self._timeout, connector=connector
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("OpenRouterClient used outside `async with`")
        return self._session

    async def complete(self, payload: dict[str, Any]) -> Completion:
        """Send one non-streaming chat completion; raise an UpstreamError subclass on failure."""
        model = str(payload.get("model", ""))
        gen_id: str | None = None
        try:
            async with self.session.post(
                f"{self.base_url}/chat/completions", data=orjson.dumps(payload)
            ) as resp:
                gen_id = resp.headers.get("X-Generation-Id")  # known before the body arrives
                body = await resp.read()
                status, headers = resp.status, resp.headers
        except TimeoutError:
            raise RetryableError(
                "request timed out", model=model, error_type="timeout", generation_id=gen_id
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableError(
                f"connection error: {type(exc).__name__}",
                model=model,
                error_type="connection",
                generation_id=gen_id,
            ) from None
        if status != 200:
            try:
                doc = orjson.loads(body.lstrip()) if body.strip() else {}
            except orjson.JSONDecodeError:
                doc = {}
            error = doc.get("error") if isinstance(doc, dict) else None
            if not isinstance(error, dict):
                error = {"code": status, "message": body[:200].decode("utf-8", "replace")}
            raise classify_error(status, error, headers, model=model)
        return parse_completion(body, status, headers, model=model)

    async def generation_cost(self, generation_id: str) -> Decimal | None:
        """`total_cost` of a generation from GET /generation; None while it is not known yet.

        A 404 (the stats appear a moment after the call), a timeout or a broken connection
        all mean "ask again later"; other errors are raised as UpstreamError.
        """
        try:
            async with self.session.get(
                f"{self.base_url}/generation", params={"id": generation_id}
            ) as resp:
                body = await resp.read()
                status, headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError):
            return None
        if status == 404:
            return None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if status != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            if not isinstance(error, dict):
                error = {"code": status, "message": "non-JSON answer from /generation"}
            raise classify_error(status, error, headers, model="")
        data = doc.get("data")
        return _cost({"cost": data.get("total_cost")}) if isinstance(data, dict) else None

    async def fetch_models(self, *, timeout_s: float = 10) -> bytes:
        """The raw `/models` document (the caller parses it with `Catalog`)."""
        try:
            async with self.session.get(
                f"{self.base_url}/models", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status != 200:
                    raise RetryableError(f"/models answered {resp.status}", status=resp.status)
                return await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"/models unreachable: {type(exc).__name__}", error_type="connection"
            ) from None


__all__ = ["OpenRouterClient", "classify_error", "parse_completion"]
