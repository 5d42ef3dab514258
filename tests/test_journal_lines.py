"""The journal lines a run writes are byte for byte what the row objects gave (issue 11).

The run now journals each row as a dict of its fields (`runner/rows.py`, `Journal.append_fields`)
instead of encoding a row object with `orjson.dumps(row, default=str)`. The writer process and
the replay read those lines by field name, with money as exact decimal text: here every kind
of row `Book` writes is compared with the line the 20a88a7 code built from a row object for the
same inputs (kept below as the reference), and `encode_row` with that encoding.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from batchroute.errors import RejectedError, RetryableError
from batchroute.journal import Journal, encode_row, read_journal, read_segment
from batchroute.runner.book import Book
from batchroute.runner.work import Call, Trail, WorkItem
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    Classification,
    Completion,
    CostFix,
    CostSource,
    Record,
    RecordStatus,
    ResultRow,
    Usage,
)

NOW = datetime(2026, 12, 7, 13, 0, 0, 123456)
STARTED = datetime(2026, 12, 7, 12, 59, 59, 5)
MINI = "openai/gpt-4o-mini"


def _old(row: ResultRow | AttemptRow | CostFix) -> bytes:
    """The line as 20a88a7 encoded a row object."""
    tag = b"r" if isinstance(row, ResultRow) else b"f" if isinstance(row, CostFix) else b"a"
    return tag + orjson.dumps(row, default=str)


def _finite(x: Decimal | None) -> Decimal | None:
    return x if x is not None and x.is_finite() and abs(x) < 10**20 else None


def _old_attempt(item: WorkItem, tier: str, n: int, call: Call, outcome: AttemptOutcome) -> bytes:
    err, c = call.error, call.completion
    return _old(
        AttemptRow(
            "r1", "t", item.record.key, n, tier, call.model, call.started, call.latency_ms,
            (err.status or None) if err else (c.http_status if c else None),
            outcome,
            err.error_type if err else (call.flag[0] if call.flag else None),
            str(err)[:500] if err else (call.flag[1] if call.flag else None),
            call.cost, call.source,
            call.generation_id or (err.generation_id if err else (c.generation_id if c else None)),
            call.reserved,
            _finite(c.usage.cost if c is not None else (err.cost if err else None)),
            _finite(c.usage.upstream_cost) if c is not None and c.usage.is_byok else None,
            served_model=call.served,  # migration 12
            served_listed_usd=call.served_listed,
        )
    )  # fmt: skip


def _old_result(item: WorkItem | Record, status: RecordStatus, **kw: Any) -> bytes:
    rec = item.record if isinstance(item, WorkItem) else item
    row = ResultRow("t", rec.key, "r1", rec.line_no, status, created_at=NOW, **kw)
    row.line_fp = rec.line_fp
    if isinstance(item, WorkItem):
        row.task_type, row.complexity = item.cls.task_type, item.cls.complexity
        row.classifier, row.request_fp = item.cls.reason, item.fp
        row.tier = row.tier or item.tier
        row.arm = item.arm
    return _old(row)


def _completion(**usage: Any) -> Completion:
    return Completion(
        'said "ok"\n\u00e9\U0001f600', "stop", "stop", MINI, "OpenAI", "gen-1", Usage(**usage)
    )


@pytest.fixture
def book(tmp_path: Path) -> Book:
    journal = Journal(tmp_path / "results.duckdb")
    journal.open()
    store = ResultStore(tmp_path / "results.duckdb")
    return Book(store, journal, run_id="r1", job_name="t", now=lambda: NOW)


def _lines(book: Book) -> list[bytes]:
    book.journal.sync()
    return book.journal.path.read_bytes().splitlines()


ITEM = WorkItem(
    Record(7, 'k"\u00e9', {"text": "x"}, line_fp=-12345), [], "fp0", Classification("translation",
    "low", "rule:x"), "mid", False, 10, arm="b",
)  # fmt: skip
CALLS = [
    Call(MINI, STARTED, 12, Decimal("0.00009615"), CostSource.OPENROUTER,
         completion=_completion(prompt_tokens=25, completion_tokens=154,
                                cost=Decimal("0.00009615"), upstream_cost=Decimal("0.00009615")),
         reserved=Decimal("0.000123456789")),
    Call(MINI, STARTED, 3, Decimal("1E-12"), CostSource.OPENROUTER,
         completion=_completion(cost=Decimal("1E-12"), upstream_cost=Decimal("2.5"), is_byok=True),
         reserved=Decimal("3.000000000000")),
    Call(MINI, STARTED, 0, Decimal("0.01"), CostSource.RESERVED,
         error=RetryableError("timed out", model=MINI, error_type="timeout", cost=Decimal("NaN"),
                              generation_id="gen-2"), reserved=Decimal("0.01")),
    Call(MINI, STARTED, 9, Decimal(0), CostSource.NONE,
         error=RejectedError("bad request " + "x" * 600, model=MINI, status=400,
                             error_type="bad_request"), reserved=Decimal("0.01")),
    Call(MINI, STARTED, 5, Decimal("0.5"), CostSource.RESERVED, completion=_completion(),
         reserved=Decimal("0.5"), generation_id="gen-9",
         flag=("implausible_cost", "reported cost $9 is not plausible")),
]  # fmt: skip


@pytest.mark.parametrize("call", CALLS)
def test_attempt_lines_are_the_row_objects_lines(book: Book, call: Call) -> None:
    for outcome in (AttemptOutcome.OK, AttemptOutcome.RETRY):
        book.attempt(ITEM, "mid", 2, call, outcome)
    assert _lines(book) == [
        _old_attempt(ITEM, "mid", 2, call, AttemptOutcome.OK),
        _old_attempt(ITEM, "mid", 2, call, AttemptOutcome.RETRY),
    ]


def test_in_flight_line_is_the_row_objects_line_and_is_journaled_again(book: Book) -> None:
    token = book.sending(ITEM, "mid", 3, MINI, STARTED, Decimal("0.000123456789"))
    want = _old(
        AttemptRow(
            "r1", "t", ITEM.record.key, 3, "mid", MINI, STARTED, 0, None,
            AttemptOutcome.IN_FLIGHT, "killed_in_flight",
            "the run died with this call in flight; booked at its reservation",
            Decimal("0.000123456789"), CostSource.RESERVED, None, Decimal("0.000123456789"),
        )
    )  # fmt: skip
    assert _lines(book) == [want]
    handed: list[Path] = []
    book._dirty = True
    book._sink = SimpleNamespace(apply=handed.append)  # type: ignore[assignment]
    book._hand_over()  # the segment a writer process would get holds it…
    assert [p.read_bytes().splitlines() for p in handed] == [[want]]
    assert _lines(book) == [want]  # …and, still open, so does the new journal
    book.landed(token)


def test_result_lines_are_the_row_objects_lines(book: Book) -> None:
    done = CALLS[0]
    trail = Trail(attempts=2, escalations=1, cost=Decimal("0.00019615"))
    book.done(ITEM, "high", trail, done)
    weak = Trail(attempts=1, cost=Decimal("0.5"), answer=_completion(prompt_tokens=3))
    weak.last_error = RetryableError("empty", model=MINI, error_type="empty_content")
    book.failed(ITEM, "mid", weak)
    book.failed(ITEM, "mid", Trail())
    book.pending(ITEM, replace(weak), why=("awaiting_budget", "worst case $1 does not fit"))
    book.pending(ITEM)
    book.invalid(Record(9, "bad", None, "not JSON", line_fp=5), "line 9: not JSON")
    c = done.completion
    assert c is not None
    assert _lines(book) == [
        _old_attempt(ITEM, "high", 2, done, AttemptOutcome.OK),
        _old_result(ITEM, RecordStatus.DONE, tier="high", model_requested=MINI,
                    model_served=c.model, provider=c.provider, output=c.content,
                    finish_reason=c.finish_reason, prompt_tokens=25, completion_tokens=154,
                    cost_usd=trail.cost, cost_source=done.source, latency_ms=12, attempts=2,
                    escalations=1, generation_id="gen-1"),
        _old_result(ITEM, RecordStatus.FAILED, tier="mid", cost_usd=Decimal("0.5"), attempts=1,
                    escalations=0, error_type="empty_content", error_message="empty",
                    model_requested=MINI, model_served=MINI, provider="OpenAI",
                    output=c.content, finish_reason="stop", prompt_tokens=3,
                    completion_tokens=0, generation_id="gen-1"),
        _old_result(ITEM, RecordStatus.FAILED, tier="mid", cost_usd=Decimal(0), attempts=0,
                    escalations=0, error_type="no_model",
                    error_message="no model could be tried", model_requested=None),
        _old_result(ITEM, RecordStatus.PENDING, cost_usd=Decimal("0.5"), attempts=1,
                    escalations=0, error_type="awaiting_budget",
                    error_message="worst case $1 does not fit", model_served=MINI,
                    provider="OpenAI", output=c.content, finish_reason="stop",
                    prompt_tokens=3, completion_tokens=0, generation_id="gen-1"),
        _old_result(ITEM, RecordStatus.PENDING, cost_usd=Decimal(0), attempts=0,
                    escalations=0, error_type=None, error_message=None),
        _old_result(Record(9, "bad", None, "not JSON", line_fp=5), RecordStatus.INVALID,
                    error_type="invalid_input", error_message="line 9: not JSON"),
    ]  # fmt: skip
    results, attempts = read_journal(book.journal.path)  # and they read back as rows
    assert [r.status for r in results] == ["done", "failed", "failed", "pending", "pending",
                                           "invalid"]  # fmt: skip
    assert results[0].cost_usd == Decimal("0.00019615")
    assert attempts[0].started_at == STARTED


def test_encode_row_is_the_row_objects_encoding(tmp_path: Path) -> None:
    rows: list[ResultRow | AttemptRow | CostFix] = [
        ResultRow("t", "k", "r1", 1, RecordStatus.DONE, cost_usd=Decimal("1.5E-7"),
                  created_at=NOW, output="\x00\u2028"),
        AttemptRow("r1", "t", "k", 1, "mid", MINI, STARTED, 4, 200, AttemptOutcome.OK,
                   cost_usd=Decimal("0E-12"), reserved_usd=None,
                   usage_cost_usd=Decimal("0.000000000001")),
        CostFix("r1", "t", "k", 1, Decimal("0.002"), CostSource.GENERATION, None,
                Decimal("0.001"), False, "gen-1"),
    ]  # fmt: skip
    assert [encode_row(r) for r in rows] == [_old(r) for r in rows]
    journal = Journal(tmp_path / "x.duckdb")
    journal.open()
    for r in rows:
        journal.append(r)
    seg = journal.rotate_segment()
    journal.close()
    assert seg is not None
    results, attempts, fixes = read_segment(seg)
    assert (results, attempts, fixes) == ([rows[0]], [rows[1]], [rows[2]])


@pytest.mark.parametrize(
    ("reserved", "listed"),
    [
        (Decimal("0.000123456789"), None),
        (Decimal("1.5E-7"), Decimal("0.000000100000")),
        (Decimal("2"), "same"),  # nothing learnt: the list price is the reservation itself
    ],
)
def test_in_flight_lines_spliced_are_the_row_objects_lines(
    book: Book, reserved: Decimal, listed: Decimal | str | None
) -> None:
    """`rows.InFlight` splices the call's fields into pre-encoded parts (issue 11): the line is
    still byte for byte the row object's, whatever the key, tier, model and amounts."""
    lst = reserved if listed == "same" else listed
    assert not isinstance(lst, str)
    item = replace(ITEM, record=replace(ITEM.record, key='k"\\\u2028\x00\U0001f600'))
    for tier, model in (("mid", MINI), ('t"ier', "m\u00e9"), ("mid", MINI)):
        book.sending(item, tier, 2, model, STARTED, reserved, lst)
    want = [
        _old(
            AttemptRow(
                "r1", "t", item.record.key, 2, tier, model, STARTED, 0, None,
                AttemptOutcome.IN_FLIGHT, "killed_in_flight",
                "the run died with this call in flight; booked at its reservation",
                reserved, CostSource.RESERVED, None, reserved, listed_usd=lst,
            )
        )
        for tier, model in (("mid", MINI), ('t"ier', "m\u00e9"), ("mid", MINI))
    ]  # fmt: skip
    assert _lines(book) == want
    book.identified((item.record.key, 2), 'gen-"x')  # the id spliced in, read back with it
    _, attempts = read_journal(book.journal.path)
    assert [(a.outcome, a.generation_id) for a in attempts] == [("killed", 'gen-"x')]


@pytest.mark.parametrize("call", CALLS)
def test_attempt_lines_from_the_in_flight_line_are_the_row_objects_lines(
    book: Book, call: Call
) -> None:
    """`Book.attempt` reuses the call's `in_flight` line for the fields the two share
    (`Call.flight`, issue 11): the attempt line is still the row object's, whatever the key,
    tier, model, time or generation id already spliced into the in-flight line."""
    item = replace(ITEM, record=replace(ITEM.record, key='k","latency_ms":1\\\u2028\x00'))
    for tier, model, gen_id in (('t"ier,"latency_ms":', "m\u00e9", None), ("mid", MINI, 'g"1')):
        token = book.sending(item, tier, 2, model, call.started, Decimal("0.5"))
        if gen_id is not None:
            book.identified(token, gen_id)
        flown = replace(call, model=model, flight=book.flight(token))
        book.landed(token)
        for outcome in (AttemptOutcome.OK, AttemptOutcome.RETRY):
            book.attempt(item, tier, 2, flown, outcome)
        lines = _lines(book)[-2:]
        assert lines == [
            _old_attempt(item, tier, 2, replace(call, model=model), AttemptOutcome.OK),
            _old_attempt(item, tier, 2, replace(call, model=model), AttemptOutcome.RETRY),
        ]
