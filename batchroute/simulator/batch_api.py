"""The Batch API's HTTP handlers: submit, get, paginated results, list and delete (no cancel).

Shapes follow docs/batch-api.md (§1, §4, §6); where that note says a detail is unknown, the
choice made is in docs/simulator.md "Batch API". Checks and the seeded fate of a submission are
in `batch_submit.py`, the timeline and billing in `batch_store.py`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from batchroute.simulator import responses as R
from batchroute.simulator.batch_store import TERMINAL, Batch
from batchroute.simulator.batch_submit import Refused, build, check, worst_cost
from batchroute.simulator.faults import api_key_of, error_response, json_response, unauthorized
from batchroute.simulator.state import SIM_STATE, SimState

RESULTS_PAGE = 100  # default page size of GET /batches/{id}/results
RESULTS_PAGE_MAX = 1000
LIST_PAGE = 20  # default `limit` of GET /batches (1-100)
STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)


def _error(status: int, message: str) -> web.Response:
    return error_response(status, R.error_obj(status, message))


def _not_found(batch_id: str) -> web.Response:
    return _error(404, f"Batch job {batch_id} not found.")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else R.iso(ts)


def batch_object(b: Batch, now: float, *, with_results: bool) -> dict[str, Any]:
    """The batch object; `results` (inline) only on GET /batches/{id}, never in the list."""
    status = b.status(now)
    obj: dict[str, Any] = {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "model": b.model,
        "completion_window": b.completion_window,
        "status": status,
        "created_at": _iso(b.created_at),
        "finalized_at": _iso(b.finalized_at(now)),
        "request_counts": b.counts(now),
        "usage": b.usage(now),
    }
    if with_results:
        obj["results"] = b.results(now)
    obj["error"] = {"message": b.fail_message} if status == "failed" else None
    return obj


def _visible(request: web.Request) -> tuple[SimState, Batch | None, web.Response | None]:
    """The batch named in the path, if the caller may see it (401/404 otherwise)."""
    st = request.app[SIM_STATE]
    if api_key_of(request) is None:
        return st, None, unauthorized()
    batch_id = request.match_info["id"]
    st.settle_batches()
    b = st.batches.batches.get(batch_id)
    if b is None or not b.visible(st.clock()):
        return st, None, _not_found(batch_id)
    return st, b, None


async def submit(request: web.Request) -> web.Response:
    """POST /batches → 202 with the batch object (status `validating`)."""
    st = request.app[SIM_STATE]
    if api_key_of(request) is None:
        return unauthorized()
    limit = st.scenario.batch_max_bytes
    too_big = f"Request body too large: a batch may be at most {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        return _error(413, too_big)
    raw = await request.read()
    if len(raw) > limit:
        return _error(413, too_big)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, "Invalid JSON body")
    try:
        endpoint, model, window, requests = check(st, body)
    except Refused as exc:
        return _error(exc.status, exc.message)
    remaining = st.remaining_credit()
    info = st.catalog.get(model)
    assert info is not None
    if remaining is not None and worst_cost(st, info, requests) > remaining:
        return _error(402, "Insufficient credits: the batch's estimated cost exceeds your balance")
    batch = build(st, endpoint, model, window, requests)
    st.batches.add(batch)
    st.batches_submitted += 1
    return json_response(batch_object(batch, st.clock(), with_results=True), status=202)


async def get(request: web.Request) -> web.Response:
    """GET /batches/{id}: status, counts, usage once terminal, inline `results` once terminal."""
    st, b, problem = _visible(request)
    if problem is not None or b is None:
        return problem or _not_found("")
    return json_response(batch_object(b, st.clock(), with_results=True))


def _cursor(batch_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{batch_id}:{offset}".encode()).decode().rstrip("=")


def _offset(batch_id: str, cursor: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    owner, _, offset = raw.rpartition(":")
    return int(offset) if owner == batch_id and offset.isdigit() else None


def _limit(raw: str | None, default: int, top: int) -> int | None:
    if raw is None:
        return default
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= top else None


async def results(request: web.Request) -> web.Response:
    """GET /batches/{id}/results?cursor=&limit=: one page of a finished batch's result lines."""
    st, b, problem = _visible(request)
    if problem is not None or b is None:
        return problem or _not_found("")
    now = st.clock()
    status = b.status(now)
    if status not in TERMINAL:
        return _error(409, f"Batch {b.id} has not finished (status: {status})")
    limit = _limit(request.query.get("limit"), RESULTS_PAGE, RESULTS_PAGE_MAX)
    if limit is None:
        return _error(400, f"limit: must be an integer from 1 to {RESULTS_PAGE_MAX}")
    cursor = request.query.get("cursor")
    offset = 0 if cursor is None else _offset(b.id, cursor)
    lines = b.results(now) or []
    if offset is None or offset > len(lines):
        return _error(400, f"Invalid cursor for batch {b.id}")
    page = lines[offset : offset + limit]
    more = offset + limit < len(lines)
    return json_response(
        {
            "object": "list",
            "data": page,
            "has_more": more,
            "next_cursor": _cursor(b.id, offset + limit) if more else None,
        }
    )


def _when(raw: str | None) -> float | None:
    if raw is None:
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


async def listing(request: web.Request) -> web.Response:
    """GET /batches?limit=&after=&status=&created_after=&created_before=: newest first."""
    st = request.app[SIM_STATE]
    if api_key_of(request) is None:
        return unauthorized()
    q = request.query
    limit = _limit(q.get("limit"), LIST_PAGE, 100)
    if limit is None:
        return _error(400, "limit: must be an integer from 1 to 100")
    wanted = q.getall("status", [])
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        return _error(400, f"status: Invalid option: {unknown[0]!r}")
    try:
        after_t, before_t = _when(q.get("created_after")), _when(q.get("created_before"))
    except ValueError:
        return _error(400, "created_after/created_before: expected ISO-8601 timestamps")
    st.settle_batches()
    now = st.clock()
    newest = [b for b in reversed(st.batches.batches.values()) if b.visible(now)]
    after = q.get("after")
    if after is not None:
        ids = [b.id for b in newest]
        if after not in ids:
            return _error(400, f"after: unknown batch id {after!r}")
        newest = newest[ids.index(after) + 1 :]
    chosen = [
        b
        for b in newest
        if (not wanted or b.status(now) in wanted)
        and (after_t is None or b.created_at > after_t)
        and (before_t is None or b.created_at < before_t)
    ]
    page = chosen[:limit]
    return json_response(
        {
            "object": "list",
            "data": [batch_object(b, now, with_results=False) for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(chosen) > limit,
        }
    )


async def delete(request: web.Request) -> web.Response:
    """DELETE /batches/{id}: purge a finished batch (409 while it runs); billing is kept."""
    st, b, problem = _visible(request)
    if problem is not None or b is None:
        return problem or _not_found("")
    status = b.status(st.clock())
    if status not in TERMINAL:
        return _error(409, f"Batch {b.id} is {status}; only a finished batch can be deleted")
    b.deleted = True
    return json_response({"id": b.id, "object": "batch", "deletion": {"openrouter": "deleted"}})


def add_routes(app: web.Application) -> None:
    """Register the Batch API under /api/v1 and the beta alias /api/beta (no cancel route:
    POST /batches/{id}/cancel is a plain-text 404, as on OpenRouter)."""
    for base in ("/api/v1/batches", "/api/beta/batches"):
        app.router.add_post(base, submit)
        app.router.add_get(base, listing)
        app.router.add_get(base + "/{id}", get)
        app.router.add_delete(base + "/{id}", delete)
        app.router.add_get(base + "/{id}/results", results)
