"""Error answers of the simulator: one builder per fault name, in OpenRouter's exact envelope.

Pure apart from building `web.Response`s; which fault happens is decided in `app.py`.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from batchroute.simulator import responses as R
from batchroute.simulator.scenario import Scenario, ScriptStep


def error_response(
    status: int,
    err: dict[str, Any],
    *,
    gid: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error envelope with a real HTTP status (and X-Generation-Id when there is one)."""
    h = dict(headers or {})
    if gid is not None:
        h["X-Generation-Id"] = gid
    return web.Response(
        body=R.envelope(err), status=status, headers=h, content_type="application/json"
    )


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, headers=headers, content_type="application/json"
    )


def api_key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized() -> web.Response:
    return error_response(401, R.error_obj(401, "No auth credentials found"))


def bad_request(message: str, **kw: Any) -> web.Response:
    return error_response(400, R.error_obj(400, message, **kw))


def abort_connection(request: web.Request) -> None:
    """Abort the transport under a request (a connection reset as the client sees it)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _retry_after(scenario: Scenario, step: ScriptStep | None) -> float:
    if step is not None and step.retry_after_s is not None:
        return step.retry_after_s
    return scenario.retry_after_s


def _fmt(seconds: float) -> str:
    return f"{seconds:g}"


def fault_error(
    fault: str,
    model: str,
    gid: str,
    scenario: Scenario,
    *,
    step: ScriptStep | None = None,
    tokens: tuple[int, int, int] = (0, 0, 0),
    now: float = 0.0,
) -> web.Response:
    """The HTTP error answer for a fault name (429, 503, 402, 400_context, …).

    `tokens` is (prompt, max_tokens, context_length) for the context-overflow message.
    """
    provider = R.provider_for(model)
    retry_after = _retry_after(scenario, step)
    headers: dict[str, str] = {}
    if fault == "429":
        av = R.availability("capacity_exhausted", model, retryable=True, retry_after=retry_after)
        raw = (
            f"{model} is temporarily rate-limited upstream. Please retry shortly, or add your "
            "own key to accumulate your rate limits: https://openrouter.ai/settings/integrations"
        )
        err = R.error_obj(
            429,
            "Provider returned error",
            error_type="rate_limit_exceeded",
            metadata={"raw": raw, "provider_name": provider},
            availability=av,
        )
        headers["Retry-After"] = _fmt(retry_after)
        return error_response(429, err, gid=gid, headers=headers)
    if fault == "429_daily":
        return _daily_cap(gid, now)
    if fault == "503":
        av = R.availability(
            "temporarily_unavailable",
            model,
            retryable=True,
            retry_after=retry_after,
            affected_providers=[provider],
        )
        err = R.error_obj(
            503,
            f"{model} is temporarily unavailable. Please retry shortly.",
            error_type="provider_overloaded",
            availability=av,
            metadata={"provider_name": provider},
        )
        headers["Retry-After"] = _fmt(retry_after)
        return error_response(503, err, gid=gid, headers=headers)
    status, err = _simple(fault, model, provider, tokens)
    return error_response(status, err, gid=gid)


def _daily_cap(gid: str, now: float) -> web.Response:
    """Platform free-models-per-day cap: X-RateLimit-* (reset in ms), no Retry-After."""
    headers = {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(R.next_utc_midnight_ms(now)),
    }
    err = R.error_obj(
        429,
        "Rate limit exceeded: free-models-per-day. "
        "Add 10 credits to unlock 1000 free model requests per day",
        error_type="rate_limit_exceeded",
        metadata={"headers": dict(headers), "provider_name": None},
    )
    return error_response(429, err, gid=gid, headers=headers)


def _simple(
    fault: str, model: str, provider: str, tokens: tuple[int, int, int]
) -> tuple[int, dict[str, Any]]:
    if fault == "502":
        raw = orjson.dumps({"error": {"message": "upstream connect error", "type": "server_error"}})
        return 502, R.error_obj(
            502,
            "Provider returned error",
            error_type="provider_unavailable",
            metadata={"raw": raw.decode(), "provider_name": provider},
        )
    if fault == "400_context":
        prompt, out, ctx = tokens
        msg = (
            f"This endpoint's maximum context length is {ctx} tokens. However, you requested "
            f"about {prompt + out} tokens ({prompt} of text input, {out} in the output). Please "
            'reduce the length of either one, or use the "middle-out" transform to compress '
            "your prompt automatically."
        )
        return 400, R.error_obj(
            400, msg, error_type="context_length_exceeded", metadata={"provider_name": None}
        )
    if fault == "403":
        meta: dict[str, Any] = {
            "reasons": ["harassment"],
            "flagged_input": "…",
            "provider_name": provider,
            "model_slug": model,
        }
        msg = f'{model} requires moderation on {provider}. Your input was flagged for "harassment".'
        return 403, R.error_obj(403, msg, error_type="permission_denied", metadata=meta)
    if fault == "404":
        av = R.availability("no_endpoints", model, retryable=False)
        return 404, R.error_obj(
            404, f"No endpoints found for {model}.", error_type="not_found", availability=av
        )
    status, message, error_type = _PLAIN[fault]
    return status, R.error_obj(status, message, error_type=error_type)


_PLAIN: dict[str, tuple[int, str, str]] = {
    "408": (408, "Request timed out", "timeout"),
    "500": (500, "Internal Server Error", "server"),
    "401": (401, "User not found.", "authentication"),
    "402": (402, "Insufficient credits", "payment_required"),
}
