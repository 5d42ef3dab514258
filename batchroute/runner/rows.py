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

import orjson

from batchroute.runner.work import Call, Trail, WorkItem
from batchroute.types import AttemptOutcome, Completion, CostSource, Record, RecordStatus, ResultRow

KILLED = "the run died with this call in flight; booked at its reservation"
# A result row's fields after `status`, at their defaults, in order.
_RESULT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ResultRow)[5:]}
# Enum members as module constants: `AttemptOutcome.OK` is a class attribute look-up through
# the enum's metaclass, ~0.24 µs on Python 3.11, several times a record (issue 11).
_OK, _IN_FLIGHT = AttemptOutcome.OK, AttemptOutcome.IN_FLIGHT
_RESERVED = CostSource.RESERVED
DONE = RecordStatus.DONE


def finite(x: Decimal | None) -> Decimal | None:
    """A reported figure as it can be stored (NaN and infinities are not amounts, nor any
    magnitude of 1e20 or more)."""
    # adjusted(): the exponent of the leading digit, so |x| < 1e20 exactly when it is < 20
    # (a zero is finite whatever its exponent): ~4x cheaper than comparing with an int.
    if x is not None and x.is_finite() and (x.adjusted() < 20 or not x):
        return x
    return None


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


class InFlight:
    """The `in_flight` attempt lines of one run (`ids`: run, job), journaled before each call
    goes out: the JSON of the row objects' encoding (`journal.encode_row`), with its fixed
    parts encoded once and the call's own spliced in: a third of the cost of a 19-field dict
    and its encoding, for every call (issue 11)."""

    def __init__(self, ids: tuple[str, str]) -> None:
        run, job = orjson.dumps(ids[0]), orjson.dumps(ids[1])
        self._head = b'a{"run_id":' + run + b',"job_name":' + job + b',"record_key":'
        self._tier_model: dict[tuple[str, str], bytes] = {}  # their fields, encoded

    def line(
        self, key: str, attempt_no: int, tier: str, model: str, started: datetime,
        reserved: Decimal, listed: Decimal | None = None,
    ) -> bytes:  # fmt: skip
        """The line (`listed`: the call's worst case at list prices, what a /generation
        fix's ratio is measured by; the reservation itself when nothing was learnt)."""
        tm = self._tier_model.get((tier, model))
        if tm is None:
            tm = b',"tier":' + orjson.dumps(tier) + b',"model":' + orjson.dumps(model)
            self._tier_model[tier, model] = tm
        money = str(reserved).encode()  # decimal text: nothing in it a JSON string escapes
        if listed is reserved:  # nothing learnt: the list price is the reservation, its text
            listed_json = b'"%s"' % money
        else:
            listed_json = b"null" if listed is None else b'"%s"' % str(listed).encode()
        return b'%s%s,"attempt_no":%d%s,"started_at":%s%s%s%s%s%s%s%s}' % (
            self._head, orjson.dumps(key), attempt_no, tm, orjson.dumps(started), _FLIGHT,
            money, _FLIGHT_MID, money, _FLIGHT_END, listed_json, _FLIGHT_SERVED,
        )  # fmt: skip


# The fixed fields of an `in_flight` row, between its time and its reservation, encoded.
_FLIGHT = orjson.dumps(
    {"latency_ms": 0, "http_status": None, "outcome": _IN_FLIGHT,
     "error_type": "killed_in_flight", "error_message": KILLED, "cost_usd": ""}
)[:-2].replace(b"{", b",", 1)  # fmt: skip
_FLIGHT_MID = orjson.dumps({"cost_source": _RESERVED, "generation_id": None, "reserved_usd": ""})
_FLIGHT_MID = b'",' + _FLIGHT_MID[1:-2]
_FLIGHT_END = b'","usage_cost_usd":null,"upstream_cost_usd":null,"listed_usd":'
_FLIGHT_SERVED = b',"served_model":null,"served_listed_usd":null'  # no answer yet (migration 12)


def attempt(
    ids: tuple[str, str], key: str, attempt_no: int, tier: str, call: Call,
    outcome: AttemptOutcome,
) -> dict[str, Any]:  # fmt: skip
    """A call's own attempt row (`ids`: run, job)."""
    return {
        "run_id": ids[0], "job_name": ids[1], "record_key": key, "attempt_no": attempt_no,
        "tier": tier, "model": call.model, "started_at": call.started,
        **attempt_tail(call, outcome),
    }  # fmt: skip


# Where an attempt line's own fields begin, after the seven it shares with the call's
# `in_flight` line (run, job, key, attempt, tier, model, start). Never inside a JSON string:
# there every `"` is escaped, so the first match is the field itself.
CUT = b',"latency_ms":'


def attempt_line(flight: bytes, call: Call, outcome: AttemptOutcome) -> tuple[bytes, str | None]:
    """A call's attempt line from its `in_flight` line (`flight`, as `InFlight.line` wrote it
    for the same run, key, attempt, tier, model and start): its first fields reused, the rest
    encoded (~3k instructions less a call than `attempt`'s 21 fields: issue 11); and its
    generation id. The same bytes as `attempt`'s dict gives (`test_journal_lines`)."""
    tail = attempt_tail(call, outcome)
    return flight[: flight.index(CUT)] + b"," + orjson.dumps(tail)[1:], tail["generation_id"]


def attempt_tail(call: Call, outcome: AttemptOutcome) -> dict[str, Any]:
    """An attempt row's fields after `started_at`, in order."""
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
    upstream = None  # (no `finite`/`text` call for an absent figure: issue 11)
    if c is not None:
        u = c.usage
        usage = u.cost
        if u.is_byok:
            upstream = text(finite(u.upstream_cost))
    else:
        usage = err.cost if err is not None else None
    if usage is not None:
        usage = finite(usage)
    return {
        "latency_ms": call.latency_ms, "http_status": status, "outcome": outcome,
        "error_type": etype, "error_message": message, "cost_usd": str(call.cost),
        "cost_source": call.source, "generation_id": call.generation_id or gen_id,
        "reserved_usd": (res := text(call.reserved)),
        "usage_cost_usd": None if usage is None else str(usage), "upstream_cost_usd": upstream,
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


def done(
    ids: tuple[str, str], item: WorkItem, tier: str, trail: Trail, call: Call, now: datetime
) -> dict[str, Any]:
    """A record's `done` row (`ids`: run, job), built at once in the row's field order: the
    same fields `result` builds from keywords, without merging dicts (issue 11). Its
    `cost_usd` still a Decimal, as `result` leaves it."""
    c = call.completion
    assert c is not None
    rec, cls, u = item.record, item.cls, c.usage
    return {
        "job_name": ids[1], "record_key": rec.key, "run_id": ids[0], "line_no": rec.line_no,
        "status": DONE, "task_type": cls.task_type, "complexity": cls.complexity,
        "tier": tier or item.tier, "classifier": cls.reason, "model_requested": call.model,
        "model_served": c.model, "provider": c.provider, "output": c.content,
        "finish_reason": c.finish_reason, "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens, "cost_usd": trail.cost,
        "cost_source": call.source, "latency_ms": call.latency_ms,
        "attempts": trail.attempts, "escalations": trail.escalations, "error_type": None,
        "error_message": None, "generation_id": c.generation_id, "request_fp": item.fp,
        "arm": item.arm, "line_fp": rec.line_fp, "created_at": now,
    }  # fmt: skip
