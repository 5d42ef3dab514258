"""Reading the journal's files back: the files beside a database, their rows, and the
in-flight marks a killed run left (`batchroute.journal`, split from it at 400 lines).

No SQL and no store here: `batchroute.runner.recover` and the writer process hand the rows on.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from batchroute.types import AttemptOutcome, AttemptRow, CostFix, ResultRow

MONEY_FIELDS = (
    "cost_usd", "reserved_usd", "usage_cost_usd", "upstream_cost_usd", "listed_usd",
    "served_listed_usd",
)  # fmt: skip


_SEGMENT = re.compile(r"\.(\d{6,})")


def journal_files(journal: Path) -> list[Path]:
    """The journal files beside a database, oldest rows first: `.flushing` (a single-process
    flush of an older version), the numbered segments the writer process had not applied yet,
    then the journal itself."""
    segments = sorted(
        (int(m.group(1)), p)
        for p in journal.parent.glob(glob.escape(journal.name) + ".*")
        if (m := _SEGMENT.fullmatch(p.name[len(journal.name) :]))
    )
    flushing = journal.with_name(journal.name + ".flushing")
    return [p for p in (flushing, *(p for _, p in segments), journal) if p.exists()]


def _raw_lines(path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(tag, fields) of each whole line of a journal file, as the journal holds them."""
    with path.open("rb") as fh:
        for line in fh:
            tag = line[:1]
            if tag not in (b"r", b"a", b"f"):
                continue  # not a row: e.g. zeros left by a power cut
            try:
                d = orjson.loads(line[1:])
            except orjson.JSONDecodeError:
                continue  # a line cut short by the kill: that call is redone
            yield tag, d


def _decimals(d: dict[str, Any]) -> dict[str, Any]:
    for name in MONEY_FIELDS:
        if (value := d.get(name)) is not None:
            d[name] = Decimal(value)
    return d


def _lines(path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(tag, fields) of each whole line of a journal file, money as Decimal."""
    return ((tag, _decimals(d)) for tag, d in _raw_lines(path))


def _row(tag: bytes, d: dict[str, Any]) -> ResultRow | AttemptRow:
    if tag == b"r":
        if d.get("created_at"):
            d["created_at"] = datetime.fromisoformat(d["created_at"])
        return ResultRow(**d)
    d["started_at"] = datetime.fromisoformat(d["started_at"])
    return AttemptRow(**d)


def cost_fixes(texts: list[str]) -> list[CostFix]:
    """The cost fixes of a segment's `f` lines, given as their JSON text (without the tag)."""
    return [CostFix(**_decimals(orjson.loads(t))) for t in texts]


def read_segment(path: Path) -> tuple[list[ResultRow], list[AttemptRow], list[CostFix]]:
    """What the writer process commits of one closed segment: its results, its answered
    attempts (an `in_flight` row is for a replay after a kill, never written by the run), and
    its cost fixes, each in journal order."""
    results: list[ResultRow] = []
    attempts: list[AttemptRow] = []
    fixes: list[CostFix] = []
    for tag, d in _lines(path):
        if tag == b"f":
            fixes.append(CostFix(**d))
        elif tag == b"r":
            results.append(_row(tag, d))  # type: ignore[arg-type]
        elif d["outcome"] != AttemptOutcome.IN_FLIGHT:
            attempts.append(_row(tag, d))  # type: ignore[arg-type]
    return results, attempts, fixes


def read_journal(*paths: Path) -> tuple[list[ResultRow], list[AttemptRow]]:
    """The rows of one or more journal files, in order (`.flushing` before the journal: an
    open call carried over from one to the other is settled once, across both)."""
    results: list[ResultRow] = []
    attempts: list[AttemptRow] = []
    for path in paths:
        for tag, d in _lines(path):
            if tag == b"r":
                results.append(_row(tag, d))  # type: ignore[arg-type]
            elif tag == b"a":
                attempts.append(_row(tag, d))  # type: ignore[arg-type]
    return results, settle_in_flight(attempts)


def settle_in_flight(attempts: list[AttemptRow]) -> list[AttemptRow]:
    """Resolve the `in_flight` rows a run journals before each call: one followed by the call's
    own row (same run, record and attempt number) is dropped; one left open means the run died
    with the call out: a `killed` attempt at its reservation (the provider may bill it), with
    the generation id a later copy carries (`Book.identified`). One committed before the kill
    is dropped by the replay (it skips rows the database has)."""
    is_open = AttemptOutcome.IN_FLIGHT
    answered = {(a.run_id, a.record_key, a.attempt_no) for a in attempts if a.outcome != is_open}
    out: list[AttemptRow] = []
    seen: dict[tuple[str, str, int], AttemptRow] = {}
    for a in attempts:
        if a.outcome == AttemptOutcome.IN_FLIGHT:
            key = (a.run_id, a.record_key, a.attempt_no)
            if (first := seen.setdefault(key, a)) is not a:  # carried over, or with its id
                first.generation_id = first.generation_id or a.generation_id
            if key in answered or first is not a:  # answered, or a copy of an open one
                continue
            a.outcome = AttemptOutcome.KILLED
        out.append(a)
    return out
