"""Client stage: the OpenRouter HTTP API over one aiohttp session.

It sends a chat completion (whole, or streamed as SSE) and returns a `Completion`, or raises
the `UpstreamError` subclass that says what the runner should do next. It classifies every
response, HTTP 200 bodies and mid-stream chunks included (errors hide in them, see
openrouter-api.md §2.3). It reports costs as the API gave them and judges none of them. It
does not retry, and it knows nothing of tiers, budget or storage. The API key lives only in
the session's headers.
"""

from __future__ import annotations

import asyncio
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
from batchroute.types import Completion, GenerationCost, Usage

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


_NO_USAGE = Usage(present=False)


def parse_usage(raw: Any) -> Usage:
    """The `usage` object of an answer or of a stream's usage chunk (§1.2); all `*_details`
    may be null or missing. Not an object → `Usage(present=False)`. Raises ValueError,
    TypeError or ArithmeticError on a count or amount that is not a number.
    """
    if not isinstance(raw, dict):
        return _NO_USAGE
    cost_raw = raw.get("cost")
    cost = _decimal(cost_raw)
    upstream = None
    details = raw.get("cost_details")
    if isinstance(details, dict):
        up = details.get("upstream_inference_cost")
        # Without BYOK both are usually the same number: convert it once.
        same = up == cost_raw and type(up) is type(cost_raw)
        upstream = cost if same else _decimal(up)
    details = raw.get("completion_tokens_details")
    reasoning = int(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0
    details = raw.get("server_tool_use") or raw.get("server_tool_use_details")
    searches = int(details.get("web_search_requests") or 0) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cost=cost,
        upstream_cost=upstream,
        is_byok=raw.get("is_byok") is True,
        reasoning_tokens=reasoning,
        web_search_requests=searches,
    )


def _billed(raw: Any) -> Decimal | None:
    """What a failed answer's usage says it billed in all (BYOK: fee + upstream), if it says."""
    try:
        return parse_usage(raw).billed
    except (AttributeError, TypeError, ValueError, ArithmeticError):
        return None


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


def _status_error(status: int, body: bytes, headers: Any, *, model: str) -> UpstreamError:
    """The error a non-200 answer stands for (its body is a JSON error envelope, or not)."""
    try:
        doc = orjson.loads(body.lstrip()) if body.strip() else {}
    except orjson.JSONDecodeError:
        doc = {}
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        error = {"code": status, "message": body[:200].decode("utf-8", "replace")}
    return classify_error(status, error, headers, model=model)


def _choice_error(choices: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The error of the first choice that failed (`finish_reason: "error"`), if one did."""
    for choice in choices:
        if choice.get("finish_reason") == "error" or isinstance(choice.get("error"), dict):
            error = choice.get("error")
            return error if isinstance(error, dict) else {}
    return None


_MAX_SSE_LINE = 8 << 20  # a "line" this long without a newline is not SSE


class _Stream:
    """One streamed answer assembled from its SSE events as they arrive (§1.4, §2.3)."""

    __slots__ = (
        "choices_seen",
        "content",
        "done",
        "finish",
        "gen_id",
        "headers",
        "model",
        "native",
        "provider",
        "served",
        "usage",
    )

    def __init__(self, model: str, gen_id: str | None, headers: Any) -> None:
        self.model = model
        self.gen_id = gen_id  # X-Generation-Id, else the first chunk's id
        self.headers = headers
        self.content: list[str] | None = None
        self.finish: str | None = None
        self.native: str | None = None
        self.served: str | None = None
        self.provider: str | None = None
        self.usage: Usage | None = None
        self.choices_seen = False
        self.done = False  # `data: [DONE]` read

    @property
    def complete(self) -> bool:
        """The answer and its bill are in: a cut after this loses nothing."""
        return self.finish is not None and self.usage is not None

    def billed(self) -> Decimal | None:
        if self.usage is None:
            return None
        try:
            return self.usage.billed
        except ArithmeticError:  # e.g. a cost of "sNaN": passed on as read, but no sum
            return None

    def malformed(self, message: str) -> RetryableError:
        return RetryableError(
            message,
            model=self.model,
            status=200,
            error_type="malformed_response",
            cost=self.billed(),
            generation_id=self.gen_id,
        )

    def cut(self, message: str, error_type: str) -> RetryableError:
        return RetryableError(
            message,
            model=self.model,
            error_type=error_type,
            cost=self.billed(),
            generation_id=self.gen_id,
        )

    async def read(self, content: aiohttp.StreamReader, deadline: float | None = None) -> None:
        """Read events until `[DONE]` or EOF (then `done` tells which); raise an error chunk.

        `deadline` (loop time) bounds the whole stream: keep-alive comments reset the idle
        timer, so a provider that hangs behind them would otherwise hold the call forever.
        """
        tail = b""
        data: bytes | None = None  # the `data:` of the event being read
        loop = asyncio.get_running_loop()
        while True:
            if deadline is not None and loop.time() > deadline:
                raise self.cut("stream went on for longer than allowed", "timeout")
            block = await content.readany()
            if not block:
                if data is not None:  # the last event lacks its blank line: take it anyway
                    self.event(data)
                return
            if tail:
                block = tail + block
            lines = block.split(b"\n")
            tail = lines.pop()
            if len(tail) > _MAX_SSE_LINE:
                raise self.malformed("stream line too long")
            data = self._lines(lines, data)
            if self.done:
                return

    def _lines(self, lines: list[bytes], data: bytes | None) -> bytes | None:
        """Feed complete lines; returns the `data:` of the event still being read."""
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:  # a blank line ends the event
                if data is not None:
                    self.event(data)
                    if self.done:
                        return None
                    data = None
            elif line[:5] == b"data:":
                value = line[6:] if line[5:6] == b" " else line[5:]
                data = value if data is None else data + b"\n" + value
            # else: a `:` comment (keep-alive) or a field we do not use (event, id, retry)
        return data

    def event(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self.malformed("undecodable data line in stream") from None
        if not isinstance(doc, dict):
            raise self.malformed("stream chunk is not a JSON object")
        try:
            self.chunk(doc)
        except (AttributeError, LookupError, TypeError, ValueError, ArithmeticError) as exc:
            raise self.malformed(f"unexpected stream chunk shape: {type(exc).__name__}") from None

    def chunk(self, doc: dict[str, Any]) -> None:
        if self.gen_id is None and isinstance(doc.get("id"), str):
            self.gen_id = doc["id"]
        if self.served is None:
            self.served = doc.get("model")
        if self.provider is None:
            self.provider = doc.get("provider")
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        error = doc.get("error")
        choices = doc.get("choices")
        if not isinstance(error, dict) and choices:
            error = _choice_error(choices)
        if isinstance(error, dict):  # §2.3 form 3: the stream ends with this chunk
            err = classify_error(200, error, self.headers, model=self.model, in_body=True)
            err.cost = self.billed()
            err.generation_id = self.gen_id
            raise err
        if choices:  # the usage chunk has none, or one with an empty delta and no finish
            self.choices_seen = True
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
                if isinstance(text, str):
                    if self.content is None:
                        self.content = [text]
                    else:
                        self.content.append(text)
            finish = choice.get("finish_reason")
            if finish is not None:
                self.finish, self.native = finish, choice.get("native_finish_reason")

    def completion(self) -> Completion:
        if not self.choices_seen:
            raise RetryableError(
                "stream has no choices",
                model=self.model,
                status=200,
                error_type="no_choices",
                cost=self.billed(),
                generation_id=self.gen_id,
            )
        return Completion(
            content="".join(self.content) if self.content is not None else None,
            finish_reason=self.finish,
            native_finish_reason=self.native,
            model=str(self.served or self.model),
            provider=self.provider,
            generation_id=self.gen_id,
            usage=self.usage or _NO_USAGE,
            http_status=200,
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
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._stream_timeouts: dict[float, aiohttp.ClientTimeout] = {}
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

    async def complete(
        self,
        payload: dict[str, Any],
        *,
        stream: bool = False,
        idle_timeout_s: float | None = None,
        stream_max_s: float | None = None,
    ) -> Completion:
        """Send one chat completion; raise an UpstreamError subclass on failure.

        `stream=True` asks for SSE and reads it as it arrives. A stream has no total timeout,
        only an idle one: no byte for `idle_timeout_s` seconds (default: the client's
        `timeout_s`) is a retryable "timeout". Without `stream` the whole call must finish
        within `timeout_s`.
        """
        if stream:
            return await self._stream(payload, idle_timeout_s, stream_max_s)
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
            raise _transport_error(exc, model, gen_id) from None
        if status != 200:
            raise _status_error(status, body, headers, model=model)
        return parse_completion(body, status, headers, model=model)

    def _stream_timeout(self, idle_s: float | None) -> aiohttp.ClientTimeout:
        idle = self._timeout_s if idle_s is None else idle_s
        timeout = self._stream_timeouts.get(idle)
        if timeout is None:  # aiohttp re-arms sock_read on every packet: an idle timer
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout_s, sock_read=idle
            )
            self._stream_timeouts[idle] = timeout
        return timeout

    async def _stream(
        self, payload: dict[str, Any], idle_timeout_s: float | None, max_s: float | None
    ) -> Completion:
        model = str(payload.get("model", ""))
        body = dict(payload)
        body["stream"] = True
        gen_id: str | None = None
        sse: _Stream | None = None
        try:
            async with self.session.post(
                f"{self.base_url}/chat/completions",
                data=orjson.dumps(body),
                timeout=self._stream_timeout(idle_timeout_s),
            ) as resp:
                headers = resp.headers
                gen_id = headers.get("X-Generation-Id")
                if resp.status != 200:  # refused before the stream began: a JSON error body
                    raise _status_error(resp.status, await resp.read(), headers, model=model)
                if resp.content_type == "application/json":  # answered whole after all
                    return parse_completion(await resp.read(), 200, headers, model=model)
                sse = _Stream(model, gen_id, headers)
                deadline = None if max_s is None else asyncio.get_running_loop().time() + max_s
                await sse.read(resp.content, deadline)
        except TimeoutError:
            if sse is not None and sse.complete:
                return sse.completion()
            if sse is None:
                raise RetryableError(
                    "request timed out", model=model, error_type="timeout", generation_id=gen_id
                ) from None
            raise sse.cut("stream idle for too long", "timeout") from None
        except aiohttp.ClientError as exc:
            if sse is not None and sse.complete:
                return sse.completion()
            if sse is None:
                raise _transport_error(exc, model, gen_id) from None
            raise sse.cut(f"stream cut: {type(exc).__name__}", "connection") from None
        if not sse.done and not sse.complete:
            raise sse.cut("stream ended before [DONE]", "connection")
        return sse.completion()

    async def generation_cost(self, generation_id: str) -> GenerationCost | None:
        """What GET /generation says a generation cost; None while it is not known yet.

        A 404 (the stats appear a moment after the call), a timeout, a broken connection or a
        record without a `total_cost` all mean "ask again later"; other errors are raised as
        UpstreamError.
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
        if not isinstance(data, dict):
            return None
        try:
            total = _decimal(data.get("total_cost"))
            upstream = _decimal(data.get("upstream_inference_cost"))
        except ArithmeticError:  # a string that is no amount
            return None
        if total is None:
            return None
        return GenerationCost(total, upstream, data.get("is_byok") is True)

    async def key_limit_remaining(self, *, timeout_s: float = 10) -> Decimal | None:
        """What the API key may still spend (`limit_remaining` of GET /key); None when the key
        has no limit or the endpoint does not say (unreachable, an error, another shape).

        Never raises: the account guard is a second line behind the job's own cap.
        """
        try:
            async with self.session.get(
                f"{self.base_url}/key", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError):
            return None
        if status != 200:
            return None
        try:
            data = orjson.loads(body).get("data")
            remaining = _decimal(data.get("limit_remaining"))
        except (orjson.JSONDecodeError, AttributeError, ArithmeticError):
            return None
        if remaining is None or not remaining.is_finite():
            return None
        return remaining

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


__all__ = ["OpenRouterClient", "classify_error", "parse_completion", "parse_usage"]
