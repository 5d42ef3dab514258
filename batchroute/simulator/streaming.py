"""SSE answers (`stream: true`): keep-alive comments, content chunks, finish chunk, a separate
usage chunk (left out by `no_usage`), `[DONE]` — and the mid-stream failure forms (error chunk,
garbage, reset).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batchroute.simulator import responses as R
from batchroute.simulator.exchange import Answer, SimCall
from batchroute.simulator.faults import abort_connection
from batchroute.simulator.state import SimState

_PIECES = 8
_BREAKS = frozenset({"200_error", "choice_error", "malformed", "reset"})  # cut mid-stream


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "index": 0,
        "delta": delta,
        "finish_reason": finish,
        "native_finish_reason": finish,
        "logprobs": None,
    }


async def stream_answer(
    request: web.Request, st: SimState, call: SimCall, ans: Answer, fault: str
) -> web.StreamResponse:
    """Write one streamed answer; `fault` selects a mid-stream failure (or "ok")."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Generation-Id": call.gid,
        }
    )
    await resp.prepare(request)
    await resp.write(R.PROCESSING)
    if ans.latency_ms > 0:
        await st.sleep(ans.latency_ms / 1000)
        await resp.write(R.PROCESSING)
    pieces = R.split_content(ans.content, _PIECES)
    per_piece = ans.generation_s / len(pieces) if pieces else 0.0
    stop_after = max(1, len(pieces) // 2) if fault in _BREAKS else len(pieces)
    for i, piece in enumerate(pieces[:stop_after]):
        if per_piece > 0:
            await st.sleep(per_piece)
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        await resp.write(R.sse(R.chunk(call.gid, ans.model, call.created, [_choice(delta)])))
        if i % 3 == 2:
            await resp.write(R.PROCESSING)
    return await _finish(request, resp, st, call, ans, fault)


async def _finish(
    request: web.Request,
    resp: web.StreamResponse,
    st: SimState,
    call: SimCall,
    ans: Answer,
    fault: str,
) -> web.StreamResponse:
    if fault in {"200_error", "choice_error"}:
        # Once tokens went out OpenRouter cannot fail over: an error chunk, then the stream ends.
        event = R.chunk(call.gid, ans.model, call.created, [_choice({"content": ""}, "error")])
        event["error"] = R.error_obj(
            502,
            "Provider returned error",
            error_type="provider_unavailable",
            metadata={"provider_code": "server_error", "provider_name": R.provider_for(ans.model)},
        )
        await resp.write(R.sse(event))
        await resp.write_eof()
        ans.record_failed(st, call, streamed=True)
        return resp
    billed = ans.bill(st)
    delivered = fault not in {"malformed", "reset"}
    reported = fault != "no_usage"
    st.record(
        ans.generation(
            call, bill=billed, streamed=True, delivered=delivered, usage_reported=reported
        ),
        billed=delivered or st.scenario.bill_undelivered,
    )
    if fault == "malformed":
        await resp.write(b'data: {"id": "' + call.gid.encode() + b'", "choices": [{"delta\n\n')
        await resp.write_eof()
        return resp
    if fault == "reset":
        abort_connection(request)
        return resp
    finish = R.chunk(call.gid, ans.model, call.created, [_choice({"content": ""}, ans.finish)])
    if not reported:  # no_usage: the finish chunk, then straight to [DONE]
        await resp.write(R.sse(finish) + R.DONE)
        await resp.write_eof()
        return resp
    usage = R.chunk(call.gid, ans.model, call.created, [])
    usage["usage"] = R.usage_obj(ans.prompt_tokens, ans.completion_tokens, billed)
    await resp.write(R.sse(finish) + R.sse(usage) + R.DONE)
    await resp.write_eof()
    return resp
