"""Client stage, the Batch API (`/batches`, batch-api.md): create, get, list, results pages.

Plain calls over the client's session: no retries, no tiers, no storage. The body of a create
is serialized by the caller (`endpoint` and `model` must come before `requests`).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from batchroute.client.session import OpenRouterClient, read_body
from batchroute.client.status import _status_error, _transport_error
from batchroute.errors import NoBatchEndpoint, RetryableError, UpstreamError

NO_BATCH_ENDPOINT = "does not have a :batch endpoint"
LIST_PAGES = 20  # at 100 a page: the workspace's 2,000 newest batches are enough to adopt ours


async def _call(
    client: OpenRouterClient, method: str, path: str, *, model: str = "", **kw: Any
) -> tuple[int, Any]:
    """(status, decoded JSON or None); a transport failure is a RetryableError."""
    try:
        async with client.session.request(method, f"{client.base_url}{path}", **kw) as resp:
            body = await read_body(resp)
            status, headers = resp.status, resp.headers
    except TimeoutError:
        raise RetryableError(
            f"{method} {path} timed out", model=model, error_type="timeout"
        ) from None
    except aiohttp.ClientError as exc:
        raise _transport_error(exc, model, None) from None
    if status == 404:
        return status, None
    if status >= 300:
        if status == 400 and NO_BATCH_ENDPOINT in body.decode("utf-8", "replace"):
            raise NoBatchEndpoint(
                f"model {model} {NO_BATCH_ENDPOINT}", model=model, status=400,
                error_type="no_batch_endpoint",
            )  # fmt: skip
        raise _status_error(status, body, headers, model=model)
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RetryableError(
            f"{method} {path}: non-JSON answer", model=model, status=status,
            error_type="malformed_response",
        ) from None  # fmt: skip


async def create_batch(client: OpenRouterClient, body: bytes, *, model: str) -> dict[str, Any]:
    """POST /batches; the batch object of the 202. A timeout or a cut connection leaves the
    outcome unknown (the caller looks the batch up before sending it again)."""
    # A file-like body: aiohttp writes a bytes body over 1 MiB in one go, blocking the loop
    # (and warns); a 5,000-request batch is tens of MB.
    status, doc = await _call(client, "POST", "/batches", model=model, data=io.BytesIO(body))
    if status == 404 or not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise UpstreamError(
            f"POST /batches answered {status} without a batch id", model=model, status=status,
            error_type="batch_api_unavailable",
        )  # fmt: skip
    return doc


async def get_batch(client: OpenRouterClient, batch_id: str) -> dict[str, Any] | None:
    """GET /batches/{id}; None for a 404 (right after a submit: not visible yet)."""
    _, doc = await _call(client, "GET", f"/batches/{batch_id}")
    return doc if isinstance(doc, dict) else None


async def list_batches(client: OpenRouterClient, created_after: datetime) -> list[dict[str, Any]]:
    """The workspace's batches created after `created_after` (naive UTC), newest first."""
    out: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "100", "created_after": created_after.isoformat() + "Z"}
    for _ in range(LIST_PAGES):
        _, doc = await _call(client, "GET", "/batches", params=params)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list) or not data:
            break
        out += [b for b in data if isinstance(b, dict)]
        last = doc.get("last_id") or out[-1].get("id")
        if not doc.get("has_more") or not isinstance(last, str):
            break
        params["after"] = last
    return out


async def batch_results(client: OpenRouterClient, batch_id: str) -> list[Any] | None:
    """Every result item of a terminal batch, from the paginated endpoint; None when the
    endpoint is absent (404 at once: then the batch object's inline `results` are all there
    is). A later page that is not there raises: the items it holds were paid for."""
    out: list[Any] = []
    params: dict[str, str] = {}
    while True:
        status, doc = await _call(client, "GET", f"/batches/{batch_id}/results", params=params)
        if not isinstance(doc, dict):
            if not params:  # the first page: no such endpoint
                return None
            raise RetryableError(
                f"batch {batch_id}: results page answered {status} after {len(out)} items",
                status=status, error_type="results_incomplete",
            )  # fmt: skip
        data = doc.get("data")
        if isinstance(data, list):
            out += data
        cursor = doc.get("next_cursor")
        if not doc.get("has_more"):
            return out
        if not isinstance(cursor, str) or cursor == params.get("cursor"):
            raise RetryableError(  # more pages, none it can follow: the rest are not "none"
                f"batch {batch_id}: results page says more follow but gives no new cursor",
                error_type="results_incomplete",
            )
        params = {"cursor": cursor}


async def terminal_results(
    client: OpenRouterClient, batch_id: str, batch: dict[str, Any]
) -> list[Any] | None:
    """A terminal batch's result lines: its pages, else (no such endpoint) the batch object's
    inline `results` (not a list: none). None when its paid answers cannot be read now and must
    be read again later, not taken as unanswered: a page failed and no inline copy stands in,
    or the first page answered 404 (no endpoint, or a moment's 404: the two look alike) while
    a `completed` batch says items completed and carries no inline copy."""
    inline = batch.get("results")
    counts = batch.get("request_counts")
    ran = counts.get("completed") if isinstance(counts, dict) else None
    # paid answers that must be there: read again at a later poll, not taken as none
    owed = batch.get("status") == "completed" and ran != 0
    # An empty inline list is no copy of a batch that owes answers (an object that leaves its
    # lines to the pages may serialise them as [] rather than null; review3).
    copy = inline if isinstance(inline, list) and (inline or not owed) else None
    try:
        lines = await batch_results(client, batch_id)
    except UpstreamError:
        return copy
    if lines is not None:
        return lines
    if copy is not None:
        return copy
    if owed:
        return None
    return []  # none ran; or expired/cancelled, whose lines may never be served (billed all
    # the same: the bill is booked and the items go again, batch-api.md §6)


async def result_ids(client: OpenRouterClient, batch_id: str) -> set[str]:
    """The custom_ids of a terminal batch's result lines (paginated, else inline): empty when
    it has none (failed in validation: nothing of it ran)."""
    lines = await batch_results(client, batch_id)
    if lines is None:
        doc = await get_batch(client, batch_id)
        lines = doc.get("results") if doc is not None else None
    if not isinstance(lines, list):
        return set()
    return {str(ln["custom_id"]) for ln in lines if isinstance(ln, dict) and "custom_id" in ln}
