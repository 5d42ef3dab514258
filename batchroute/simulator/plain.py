"""Non-streamed answers (`stream: false`): the JSON completion body, billed and recorded, and its
failure forms (a 200 carrying an error, a choice error, no usage, leading whitespace, a malformed
body, a reset connection).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from batchroute.simulator import responses as R
from batchroute.simulator.exchange import Answer, SimCall
from batchroute.simulator.faults import abort_connection
from batchroute.simulator.state import SimState

_JSON = "application/json"
_UPSTREAM_ERROR = {"message": "Provider returned error", "code": 502}


async def plain_answer(
    request: web.Request, st: SimState, call: SimCall, ans: Answer, fault: str
) -> web.StreamResponse:
    """Write one non-streamed answer; `fault` selects a failure form (or "ok")."""
    headers = {"X-Generation-Id": call.gid}
    if fault == "200_error":
        err = R.error_obj(
            502,
            "Provider returned error",
            error_type="provider_unavailable",
            metadata={
                "provider_name": R.provider_for(ans.model),
                "raw": orjson.dumps({"error": _UPSTREAM_ERROR}).decode(),
            },
        )
        ans.record_failed(st, call, streamed=False)
        return web.Response(body=R.envelope(err), headers=headers, content_type=_JSON)
    if fault == "choice_error":
        # zero-completion insurance: the usage is reported, the tokens cost 0 (a search does not)
        billed = ans.bill(st, insured=True)
        body = R.completion_body(
            gid=call.gid,
            model=ans.model,
            created=call.created,
            content="",
            finish="error",
            usage=R.usage_obj(ans.prompt_tokens, 0, billed),
            error=R.error_obj(502, "Provider returned error", error_type="provider_unavailable"),
        )
        gen = ans.generation(call, bill=billed, streamed=False, delivered=True, finish="error")
        gen.completion_tokens = 0
        st.record(gen, billed=True)
        return web.Response(body=orjson.dumps(body), headers=headers, content_type=_JSON)
    billed = ans.bill(st)
    reported = fault != "no_usage"
    body = R.completion_body(
        gid=call.gid,
        model=ans.model,
        created=call.created,
        content=ans.content,
        finish=ans.finish,
        usage=R.usage_obj(ans.prompt_tokens, ans.completion_tokens, billed) if reported else None,
    )
    data = orjson.dumps(body)
    delivered = fault not in {"malformed", "reset"}
    st.record(
        ans.generation(
            call, bill=billed, streamed=False, delivered=delivered, usage_reported=reported
        ),
        billed=delivered or st.scenario.bill_undelivered,
    )
    if fault == "leading_ws":
        data = b"\n\n   \n" + data
    elif fault == "malformed":
        data = data[: len(data) // 2]
    elif fault == "reset":
        return await _reset(request, data, headers)
    return web.Response(body=data, headers=headers, content_type=_JSON)


async def _reset(request: web.Request, data: bytes, headers: dict[str, str]) -> web.StreamResponse:
    """Send headers and half the body, then abort the TCP connection."""
    resp = web.StreamResponse(headers=headers)
    resp.content_type = _JSON
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    abort_connection(request)
    return resp
