"""A record's rows as the run journals them: dicts of the row classes' fields, in order.

`Book` hands these to `Journal.append_fields`, never row objects: orjson encodes a dict about
three times faster than the same slots dataclass, and money goes in as its exact decimal text
(`str(Decimal)`) instead of through `default=str`, a Python call per amount. The journal line
is the JSON the row object gave (`journal.encode_row`): the same fields in the same order,
money as decimal text, times as ISO text, enums as their values (issue 11).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any

from batchroute.runner.work import Call, WorkItem
from batchroute.types import AttemptOutcome, Completion, CostSource, Record, RecordStatus, ResultRow

KILLED = "the run died with this call in flight; booked at its reservation"
# A result row's fields after `status`, at their defaults, in order.
_RESULT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ResultRow)[5:]}


def finite(x: Decimal | None) -> Decimal | None:
    """A reported figure as it can be stored (NaN and infinities are not amounts)."""
    return x if x is not None and x.is_finite() and abs(x) < 10**20 else None


def text(x: Decimal | None) -> str | None:
    """An amount as the journal keeps it: its exact decimal text."""
    return None if x is None else str(x)


def answer(c: Completion | None) -> dict[str, Any]:
    """A paid answer that failed a quality check (cut off, empty, not JSON), for the row of a
    record that ends without a better one: it was paid for, so it is never thrown away."""
    if c is None:
        return {}
    return {
        "model_served": c.model,
        "provider": c.provider,
        "output": c.content,
        "finish_reason": c.finish_reason,
        "prompt_tokens": c.usage.prompt_tokens,
        "completion_tokens": c.usage.completion_tokens,
        "generation_id": c.generation_id,
    }


def in_flight(
    ids: tuple[str, str], key: str, attempt_no: int, tier: str, model: str, started: datetime,
    reserved: Decimal, listed: Decimal | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The `in_flight` attempt row journaled before a call goes out (`ids`: run, job;
    `listed`: its worst case at list prices, what a /generation fix's ratio is measured by)."""
    money = str(reserved)
    return {
        "run_id": ids[0], "job_name": ids[1], "record_key": key, "attempt_no": attempt_no,
        "tier": tier, "model": model, "started_at": started, "latency_ms": 0,
        "http_status": None, "outcome": AttemptOutcome.IN_FLIGHT,
        "error_type": "killed_in_flight", "error_message": KILLED, "cost_usd": money,
        "cost_source": CostSource.RESERVED, "generation_id": None, "reserved_usd": money,
        "usage_cost_usd": None, "upstream_cost_usd": None,
        # nothing learnt: the list price is the reservation (the same object): its text again
        "listed_usd": money if listed is reserved else text(listed),
        "served_model": None, "served_listed_usd": None,
    }  # fmt: skip


def attempt(
    ids: tuple[str, str], key: str, attempt_no: int, tier: str, call: Call,
    outcome: AttemptOutcome,
) -> dict[str, Any]:  # fmt: skip
    """A call's own attempt row (`ids`: run, job)."""
    err, c, flag = call.error, call.completion, call.flag
    etype: str | None
    message: str | None
    if err is not None:
        status, etype, message = err.status or None, err.error_type, str(err)[:500]
        gen_id = err.generation_id
    else:
        status = c.http_status if c is not None else None
        etype, message = flag if flag is not None else (None, None)
        gen_id = c.generation_id if c is not None else None
    if c is not None:
        u = c.usage
        usage, upstream = u.cost, (u.upstream_cost if u.is_byok else None)
    else:
        usage, upstream = (err.cost if err is not None else None), None
    return {
        "run_id": ids[0], "job_name": ids[1], "record_key": key, "attempt_no": attempt_no,
        "tier": tier, "model": call.model, "started_at": call.started,
        "latency_ms": call.latency_ms, "http_status": status, "outcome": outcome,
        "error_type": etype, "error_message": message, "cost_usd": str(call.cost),
        "cost_source": call.source, "generation_id": call.generation_id or gen_id,
        "reserved_usd": (res := text(call.reserved)), "usage_cost_usd": text(finite(usage)),
        "upstream_cost_usd": text(finite(upstream)),
        "listed_usd": res if call.listed is call.reserved else text(call.listed),
        "served_model": call.served,
        "served_listed_usd": text(call.served_listed),
    }  # fmt: skip


def result(
    ids: tuple[str, str], item: WorkItem | Record, status: RecordStatus, now: datetime,
    kw: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """A record's result row (`ids`: run, job; `kw`: its other fields, money as Decimal):
    its `cost_usd` still a Decimal, for the caller to count and turn into text."""
    rec = item.record if isinstance(item, WorkItem) else item
    row = {"job_name": ids[1], "record_key": rec.key, "run_id": ids[0], "line_no": rec.line_no,
           "status": status, **_RESULT_DEFAULTS, **kw}  # fmt: skip
    row["line_fp"] = rec.line_fp  # lets the next run skip this very line unparsed (issue 11)
    row["created_at"] = now
    if isinstance(item, WorkItem):
        cls = item.cls
        row["task_type"], row["complexity"] = cls.task_type, cls.complexity
        row["classifier"], row["request_fp"] = cls.reason, item.fp
        row["tier"] = row["tier"] or item.tier
        row["arm"] = item.arm
    return row
