"""Client stage, the façade: `OpenRouterClient` owns the one aiohttp session and its calls.

It sends requests and hands bodies to `client.parse` / `client.stream`, failures to
`client.status`. It does not retry, and knows nothing of tiers, budget or storage. The API
key lives only in the session's headers.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from yarl import URL

from batchroute.client.parse import _cost, _decimal, byok_of, parse_completion
from batchroute.client.status import (
    _status_error,
    _transport_error,
    classify_error,
    generation_id_of,
)
from batchroute.client.stream import _Stream
from batchroute.errors import RetryableError, keep_secret, scrub
from batchroute.types import CallSeen, Completion, GenerationCost


async def read_body(resp: aiohttp.ClientResponse) -> bytes:
    """The body of an answer, cleaned of the API key (`errors.scrub`): how the client reads
    every body (and `client.stream` every event), so that upstream text enters our types
    already clean. A gateway's 401 or a provider's raw error may quote the key; so may a batch
    result line, a failed batch's `error`, or any field of an answer."""
    return scrub(await resp.read())


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
        # Parsed once: a string would be parsed into a URL by aiohttp on every call (issue 11).
        self._chat_url = URL(f"{self.base_url}/chat/completions")
        keep_secret(api_key)  # a server that echoes it must not put it in our error text
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
        seen: CallSeen | None = None,
    ) -> Completion:
        """Send one chat completion; raise an UpstreamError subclass on failure.

        `seen` gets the generation id as soon as it is known (before the answer), for a
        caller whose call may be cancelled in flight.

        `stream=True` asks for SSE and reads it as it arrives. A stream has no total timeout,
        only an idle one: no byte for `idle_timeout_s` seconds (default: the client's
        `timeout_s`) is a retryable "timeout". Without `stream` the whole call must finish
        within `timeout_s`.
        """
        if stream:
            return await self._stream(payload, idle_timeout_s, stream_max_s, seen)
        model = str(payload.get("model", ""))
        gen_id: str | None = None
        try:
            async with self.session.post(self._chat_url, data=orjson.dumps(payload)) as resp:
                headers = resp.headers
                gen_id = generation_id_of(headers)  # known before the body arrives
                # Told only when the body is still to come (the read below may wait): a body
                # that came with its headers is read without yielding to the loop, so no
                # cancellation can land before the answer is the caller's (issue 11: `seen`
                # costs the run a loop callback a call).
                if seen is not None and not resp.content.is_eof():
                    seen.generation_id = gen_id
                body = scrub(await resp.read())  # = read_body, one coroutine less a call
                status = resp.status
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
        self,
        payload: dict[str, Any],
        idle_timeout_s: float | None,
        max_s: float | None,
        seen: CallSeen | None,
    ) -> Completion:
        model = str(payload.get("model", ""))
        body = dict(payload)
        body["stream"] = True
        gen_id: str | None = None
        sse: _Stream | None = None
        try:
            async with self.session.post(
                self._chat_url,
                data=orjson.dumps(body),
                timeout=self._stream_timeout(idle_timeout_s),
            ) as resp:
                headers = resp.headers
                gen_id = generation_id_of(headers)
                if seen is not None:
                    seen.generation_id = gen_id
                if resp.status != 200:  # refused before the stream began: a JSON error body
                    raise _status_error(resp.status, await read_body(resp), headers, model=model)
                if resp.content_type == "application/json":  # answered whole after all
                    return parse_completion(await read_body(resp), 200, headers, model=model)
                sse = _Stream(model, gen_id, headers, seen)
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
        UpstreamError. So does a session already closed (a poll that outlived its run): the
        call stays booked at its reservation and the next run asks.
        """
        session = self._session
        if session is None or session.closed:
            return None
        try:
            async with session.get(
                f"{self.base_url}/generation", params={"id": generation_id}
            ) as resp:
                body = await read_body(resp)
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
            total = _cost(data.get("total_cost"))
            upstream = _cost(data.get("upstream_inference_cost"))
        except ArithmeticError:  # a string that is no amount
            return None
        if total is None:
            return None
        served = data.get("model")  # fills `attempts.served_model` where no answer said it
        byok = byok_of(data.get("is_byok"), total, upstream)
        return GenerationCost(total, upstream, byok, served if isinstance(served, str) else None)

    async def key_limit_remaining(self, *, timeout_s: float = 10) -> Decimal | None:
        """What the API key may still spend (`limit_remaining` of GET /key); None when the key
        has no limit or the endpoint does not say (unreachable, an error, another shape).

        Never raises: the account guard is a second line behind the job's own cap.
        """
        try:
            async with self.session.get(
                f"{self.base_url}/key", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                body = await read_body(resp)
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
                return await read_body(resp)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"/models unreachable: {type(exc).__name__}", error_type="connection"
            ) from None

    async def generation_status(self, generation_id: str, *, timeout_s: float = 10) -> int | None:
        """The HTTP status GET /generation answers for `generation_id`, body unread; None when
        there is no answer (unreachable, timed out, the session closed). Never raises: the
        probe of whether a base URL has /generation at all (`runner.reconcile`)."""
        session = self._session
        if session is None or session.closed:
            return None
        try:
            async with session.get(
                f"{self.base_url}/generation",
                params={"id": generation_id},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError):
            return None
