"""The writer process's fast path (`batchroute.writer.apply_segment`: journal fields straight
to columns, new keys inserted plainly, existing ones upserted) writes exactly what the row path
(`ResultStore.write` of `read_segment`) writes, on real DuckDB files and real journals."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_CEILING, Decimal, localcontext
from pathlib import Path
from typing import Any

import duckdb

from batchroute.journal import Journal, cost_fixes, read_segment
from batchroute.store import ResultStore
from batchroute.store.segment import _ceil_money, _maybe_rounds, _rounds
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    CostFix,
    CostSource,
    RecordStatus,
    ResultRow,
)
from batchroute.writer import _apply, apply_segment

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456)


def _attempt(key: str, n: int, outcome: AttemptOutcome, cost: str, **kw: Any) -> AttemptRow:
    return AttemptRow(
        "run1", "t", key, n, "mid", "m", kw.pop("started", T0), 20, 200, outcome, None, None,
        Decimal(cost), kw.pop("source", CostSource.OPENROUTER), kw.pop("gen", None),
        Decimal("0.01"), **kw,
    )  # fmt: skip


def _result(key: str, line: int, **kw: Any) -> ResultRow:
    base: dict[str, Any] = {"created_at": T0, "tier": "mid", "cost_usd": Decimal("0.001")}
    return ResultRow("t", key, "run1", line, kw.pop("status", RecordStatus.DONE), **{**base, **kw})


def _segment(db: Path, rows: list[Any]) -> Path:
    j = Journal(db)
    j.open()
    for row in rows:
        j.append(row)
    seg = j.rotate_segment()
    j.close()
    assert seg is not None
    return seg


def _dump(db: Path) -> tuple[list[Any], list[Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        r = con.execute("SELECT * FROM results ORDER BY ALL").fetchall()
        a = con.execute("SELECT * FROM attempts ORDER BY ALL").fetchall()
    finally:
        con.close()
    return r, a


def _both(tmp_path: Path, earlier: list[Any], rows: list[Any]) -> None:
    """Apply `rows` after `earlier` with the fast path in one file and the row path in another;
    the two files must hold the same rows."""
    dumps = []
    for name, fast in (("fast", True), ("rows", False)):
        d = tmp_path / name
        d.mkdir()
        db = d / "r.duckdb"
        store = ResultStore(db, clock=lambda: datetime(2026, 5, 2, tzinfo=UTC))
        store.migrate()
        if earlier:
            store.write(*read_segment(_segment(db, earlier)))
        seg = _segment(db, rows)
        if fast:
            apply_segment(store, seg)
        else:
            store.write(*read_segment(seg))
        dumps.append(_dump(db))
    assert dumps[0] == dumps[1]
    assert dumps[0][0], "nothing was written"


def test_the_fast_path_writes_what_the_row_path_writes(tmp_path: Path) -> None:
    plus2 = timezone(timedelta(hours=2))
    at2 = datetime(2026, 5, 1, 14, tzinfo=plus2)  # an aware time: stored as 12:00 UTC
    rows: list[Any] = [
        _attempt("a", 1, AttemptOutcome.IN_FLIGHT, "0.01"),  # never written by the run
        _attempt("a", 1, AttemptOutcome.OK, "0.00000001", gen="g1"),  # money in E notation
        _result("a", 1, cost_usd=Decimal("1E-8"), output="bonjour", generation_id="g1"),
        _attempt("b", 1, AttemptOutcome.FAILED, "0", started=at2),
        _result("b", 2, status=RecordStatus.FAILED, created_at=at2),
        _result("c", 3, status=RecordStatus.INVALID, created_at=None, cost_usd=Decimal(0)),
        _attempt("d", 1, AttemptOutcome.OK, "0.01", source=CostSource.RESERVED, gen="g4"),
        _result("d", 4, cost_usd=Decimal("0.01")),
        CostFix("run1", "t", "d", 1, Decimal("0.002"), "generation", generation_id="g4"),
    ]
    _both(tmp_path, [], rows)


def test_existing_keys_accumulate_and_keep_their_answer(tmp_path: Path) -> None:
    """A rerun's rows for keys the table holds: upserted (cost and attempts add up; a row
    without an answer keeps the paid one), beside new keys inserted plainly."""
    earlier = [_result("a", 1, output="paid answer"), _result("b", 2)]
    later = [
        _result("a", 1, status=RecordStatus.PENDING, output=None),
        _result("c", 3, output="new"),
    ]
    _both(tmp_path, earlier, later)


def test_a_key_repeated_in_one_segment_is_combined(tmp_path: Path) -> None:
    _both(tmp_path, [], [_result("a", 1, output="x"), _result("a", 5, output=None)])


def test_money_goes_through_duckdb_s_path_exactly(tmp_path: Path) -> None:
    """Every money field keeps all 12 decimals and its 26 integer digits (no double on the
    way: 0.1 + 0.2 and 12 significant decimals would both show a float)."""
    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    big = Decimal("12345678901234567890123456.000000000001")
    rows: list[Any] = [
        _attempt(
            "a",
            1,
            AttemptOutcome.OK,
            "0.100000000001",
            usage_cost_usd=Decimal("0.2"),
            upstream_cost_usd=big,
        ),
        _attempt("a", 2, AttemptOutcome.OK, "0.2"),
        _result("a", 1, cost_usd=Decimal("0.300000000001")),
    ]
    seg = _segment(db, rows)
    assert store.write_segments([seg], cost_fixes), "DuckDB's path did not take the segment"
    con = duckdb.connect(str(db), read_only=True)
    try:
        a = con.execute(
            "SELECT cost_usd, reserved_usd, usage_cost_usd, upstream_cost_usd FROM attempts "
            "ORDER BY attempt_no"
        ).fetchall()
        r = con.execute("SELECT cost_usd, (SELECT sum(cost_usd) FROM attempts) FROM results")
        (total, summed) = r.fetchone() or (None, None)
    finally:
        con.close()
    assert a == [
        (Decimal("0.100000000001"), Decimal("0.01"), Decimal("0.2"), big),
        (Decimal("0.2"), Decimal("0.01"), None, None),
    ]
    assert total == summed == Decimal("0.300000000001")


def test_duckdb_s_path_rounds_money_with_more_than_12_decimals_up(tmp_path: Path) -> None:
    """An amount with more decimals than the store keeps (12) is stored rounded up, never to
    nearest: `CAST(x AS DECIMAL(38,12))` alone stores 0.0000001234564321 as 0.000000123456,
    under the bill. The journal writes Decimal text as `str` gives it, E notation included
    (`1.234564321E-7`); the row path (`encode.money`) rounds up too, so both paths agree."""
    long = Decimal("0.0000001234564321")  # E notation in the journal; to nearest: rounds down
    plain = Decimal("0.1000000000001")  # plain text in the journal
    tiny = Decimal("1E-20")  # to nearest: 0
    rows: list[Any] = [
        _attempt(
            "a", 1, AttemptOutcome.OK, str(long),
            usage_cost_usd=plain, upstream_cost_usd=tiny,
        ),
        _result("a", 1, cost_usd=long + plain),
    ]  # fmt: skip
    got = []
    for name, fast in (("fast", True), ("rows", False)):
        db = tmp_path / f"{name}.duckdb"
        store = ResultStore(db)
        store.migrate()
        seg = _segment(db, rows)
        if fast:
            assert store.write_segments([seg], cost_fixes), "DuckDB's path did not take it"
        else:
            store.write(*read_segment(seg))
        got.append(_dump(db))
        con = duckdb.connect(str(db), read_only=True)
        try:
            a = con.execute(
                "SELECT cost_usd, usage_cost_usd, upstream_cost_usd, reserved_usd FROM attempts"
            ).fetchall()
            r = con.execute("SELECT cost_usd FROM results").fetchall()
        finally:
            con.close()
        assert a == [
            (
                Decimal("0.000000123457"),
                Decimal("0.100000000001"),
                Decimal("0.000000000001"),
                Decimal("0.01"),
            )
        ], name
        assert r == [(Decimal("0.100000123457"),)], name  # 0.1000001234565321
    assert got[0] == got[1]


def test_the_segment_sql_rounds_any_decimal_text_up_exactly() -> None:
    """`_ceil_money` against Decimal's ROUND_CEILING on thousands of amounts as `str` and
    `format(…, "f")` write them (E notation, up to 30 digits, exponents -30…5, signs), and
    `_rounds`, which picks the plain cast, never picks it for an amount the cast would round."""
    rng = random.Random(7)
    texts = ["0E-12", "1E-13", "-1E-13", "0", "5", ".5", "3.", "2E+3", "1.000000000000"]
    for _ in range(2_000):
        digits = tuple(rng.randint(0, 9) for _ in range(rng.randint(1, 30)))
        d = Decimal((rng.choice([0, 0, 0, 1]), digits, rng.randint(-30, 5)))
        if abs(d) < Decimal("1e25"):
            texts += [str(d), format(d, "f")]
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT x, {_ceil_money('x')}, {_rounds('x')}, CAST(x AS DECIMAL(38,12)) "
            "FROM (SELECT unnest(?::VARCHAR[]) AS x)",
            [texts],
        ).fetchall()
        # The byte checks in front of `_rounds` (the writer's filter) never let through an
        # amount `_rounds` would stop, and stop none it lets through.
        maybe = con.execute(
            f"SELECT x FROM (SELECT unnest(?::VARCHAR[]) AS x) WHERE {_rounds('x')} "
            f"IS DISTINCT FROM {_maybe_rounds('x')}",
            [texts],
        ).fetchall()
    finally:
        con.close()
    assert maybe == []
    assert len(rows) == len(texts)
    with localcontext(prec=100):
        want = {t: Decimal(t).quantize(Decimal("1e-12"), rounding=ROUND_CEILING) for t in texts}
    assert [(x, c) for x, c, _, _ in rows if c != want[x]] == []
    assert [(x, p) for x, _, r, p in rows if not r and p != want[x]] == []
    assert sum(r for _, _, r, _ in rows) > len(rows) / 2  # most of these need the rounding


def test_a_line_cut_short_is_skipped_as_the_replay_skips_it(tmp_path: Path) -> None:
    """A segment whose last line was cut short (a kill -9 mid-write) or holds zeros (a power
    cut): DuckDB's path refuses it whole, and the row path writes every whole line."""
    rows: list[Any] = [
        _attempt("a", 1, AttemptOutcome.OK, "0.001"),
        _result("a", 1, output="whole"),
        _attempt("b", 1, AttemptOutcome.OK, "0.002"),
        _result("b", 2, output="cut short"),
    ]
    d = tmp_path / "one"
    d.mkdir()
    seg = _segment(d / "r.duckdb", rows)
    data = seg.read_bytes()
    seg.write_bytes(data[: data.rindex(b"cut short") + 3])  # the last line, torn
    for name, tail in (("torn", b""), ("zeros", b"\n\x00\x00\x00\x00\n")):
        db = tmp_path / name / "r.duckdb"
        db.parent.mkdir()
        store = ResultStore(db)
        store.migrate()
        copy = db.parent / seg.name
        copy.write_bytes(seg.read_bytes() + tail)
        apply_segment(store, copy)
        results, attempts = _dump(db)
        assert [(r[1], r[12]) for r in results] == [("a", "whole")], name
        assert sorted(a[2] for a in attempts) == ["a", "b"], name


def test_segments_waiting_together_are_written_as_if_one_by_one(tmp_path: Path) -> None:
    """The writer commits segments that wait together in one transaction: the file must hold
    what writing them one after the other holds, a cost fix of a later segment included."""
    first = [
        _attempt("a", 1, AttemptOutcome.OK, "0.01", source=CostSource.RESERVED, gen="g1"),
        _result("a", 1, cost_usd=Decimal("0.01"), output="x"),
    ]
    second = [
        _attempt("b", 1, AttemptOutcome.OK, "0.003"),
        _result("b", 2, cost_usd=Decimal("0.003")),
        CostFix("run1", "t", "a", 1, Decimal("0.002"), "generation", generation_id="g1"),
    ]
    dumps = []
    for name in ("together", "apart"):
        db = tmp_path / name / "r.duckdb"
        db.parent.mkdir()
        store = ResultStore(db, clock=lambda: datetime(2026, 5, 2, tzinfo=UTC))
        store.migrate()
        s1, s2 = _segment(db, first), _segment(db, second)
        if name == "together":
            assert store.write_segments([s1, s2], cost_fixes)
        else:
            store.write(*read_segment(s1))
            store.write(*read_segment(s2))
        dumps.append(_dump(db))
    assert dumps[0] == dumps[1]
    assert [r[16] for r in dumps[0][0]] == [Decimal("0.002"), Decimal("0.003")]


def test_the_writer_process_answers_every_segment_that_waited_in_order(tmp_path: Path) -> None:
    """Commands that are all waiting when the writer reads them (it gathers the `apply`s into
    one transaction): each segment is answered in order, deleted, and its rows are in; `quit`
    ends it cleanly (exit 0, nothing on stderr) while the run still holds its stdin open."""
    db = tmp_path / "r.duckdb"
    ResultStore(db).migrate()
    segs = [
        _segment(db, [_attempt(k, 1, AttemptOutcome.OK, "0.001"), _result(k, i)])
        for i, k in enumerate("abc", start=1)
    ]
    commands = b"".join(b"apply " + os.fsencode(s) + b"\n" for s in segs) + b"quit\n"
    with subprocess.Popen(
        [sys.executable, "-m", "batchroute.writer", str(db), "5.0", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            proc.stdin.write(commands)
            proc.stdin.flush()
            replies = [proc.stdout.readline() for _ in range(len(segs) + 1)]
            code = proc.wait(timeout=120)  # stdin still open, as the run keeps it
            stderr = proc.stderr.read()
        finally:
            proc.kill()
    assert replies == [b"ok " + os.fsencode(s) + b"\n" for s in segs] + [b"bye\n"]
    assert (code, stderr) == (0, b"")
    assert not any(s.exists() for s in segs)
    results, attempts = _dump(db)
    assert [r[1] for r in results] == ["a", "b", "c"]
    assert [a[2] for a in attempts] == ["a", "b", "c"]


def test_waiting_segments_that_cannot_go_together_are_written_one_by_one(tmp_path: Path) -> None:
    """Two waiting segments, the second with a line cut short: DuckDB's path refuses them
    together, so each goes on its own (the first by DuckDB, the second by the row path), in
    order, each answered after its own commit."""
    db = tmp_path / "r.duckdb"
    store = ResultStore(db, keep_instance=True)
    store.migrate()
    s1 = _segment(db, [_attempt("a", 1, AttemptOutcome.OK, "0.001"), _result("a", 1)])
    s2 = _segment(db, [_result("b", 2), _result("c", 3, output="cut short")])
    s2.write_bytes(s2.read_bytes()[:-10])
    answered: list[bytes] = []
    args = [os.fsencode(s1), os.fsencode(s2)]
    _apply(store, [s1, s2], answered.append, args)
    assert answered == args
    assert not s1.exists()
    assert not s2.exists()
    results, attempts = _dump(db)
    assert [r[1] for r in results] == ["a", "b"]
    assert [a[2] for a in attempts] == ["a"]


def test_a_held_key_and_an_amount_to_round_up_go_together(tmp_path: Path) -> None:
    """A segment whose result key the file holds already (the upsert) and whose amounts need
    rounding up (`_ceil_money`): DuckDB's path takes it, after both of its retries, and the
    file holds what the row path writes (cost accumulated, every amount rounded up)."""
    earlier = [_attempt("a", 1, AttemptOutcome.OK, "0.002"), _result("a", 1, output="x")]
    long = Decimal("0.0000001234564321")  # E notation in the journal
    rows: list[Any] = [
        _attempt("a", 2, AttemptOutcome.OK, str(long), usage_cost_usd=long),
        _result("a", 1, cost_usd=long, output="y"),
        _attempt("b", 1, AttemptOutcome.OK, "0.000001"),
        _result("b", 2, cost_usd=Decimal("0.000001")),
    ]
    dumps = []
    for name, fast in (("fast", True), ("rows", False)):
        db = tmp_path / name / "r.duckdb"
        db.parent.mkdir()
        store = ResultStore(db, clock=lambda: datetime(2026, 5, 2, tzinfo=UTC))
        store.migrate()
        store.write(*read_segment(_segment(db, earlier)))
        seg = _segment(db, rows)
        if fast:
            assert store.write_segments([seg], cost_fixes), "DuckDB's path did not take it"
        else:
            store.write(*read_segment(seg))
        dumps.append(_dump(db))
    assert dumps[0] == dumps[1]
    results = {r[1]: r for r in dumps[0][0]}
    assert results["a"][12] == "y"
    con = duckdb.connect(str(tmp_path / "fast" / "r.duckdb"), read_only=True)
    try:
        cost = con.execute("SELECT cost_usd FROM results WHERE record_key = 'a'").fetchall()
    finally:
        con.close()
    assert cost == [(Decimal("0.001") + Decimal("0.000000123457"),)]


def test_a_line_whose_tag_is_not_followed_by_its_json_goes_to_the_row_path(
    tmp_path: Path,
) -> None:
    """The tag is cut as a byte (`ltrim`) only where `{` follows it: a line `rr{…}` is not a
    row to the replay (its JSON does not parse), so DuckDB's path must refuse the segment
    rather than read it as one."""
    rows: list[Any] = [_attempt("a", 1, AttemptOutcome.OK, "0.001"), _result("a", 1)]
    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    seg = _segment(db, rows)
    seg.write_bytes(seg.read_bytes().replace(b"\nr{", b"\nrr{"))
    assert not store.write_segments([seg], cost_fixes)
    assert read_segment(seg)[0] == []  # the row path skips it
