"""A closed journal segment applied by DuckDB itself: the writer process's path (issue 11).

The journal (`batchroute.journal`) writes one row per line: a tag byte (`r` a result, `a` an
attempt, `f` a cost fix) and the row as one JSON object (orjson: money as exact decimal text,
times as ISO text, enums as their values, missing values as null). Here DuckDB reads the file,
splits the lines, parses the JSON and casts every field in C++ (`read_csv`, `json_transform`),
so the writer builds no Python object per row. Money goes from its decimal text straight to
`DECIMAL(38,12)`, never through a double, rounded up to its 12 places where it has more
(`Rounds`, then `_ceil_money`). A segment with a line that is no whole row (cut short by a
kill, zeros after a power cut) is left to the row path, which skips that line as
`journal._raw_lines` does.

Several segments waiting together are written in one transaction: each transaction costs a
fixed ~25 ms of CPU (attach, commit, the checkpoint on detach), so a writer that fell behind
catches up instead of falling further behind. A write that needs the row path instead (a
result key repeated, which needs its rows combined first, `encode.dedupe`; a line that is not
whole JSON; bytes that are not UTF-8) raises NotNative with nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

import duckdb

from ..types import AttemptOutcome, CostFix
from .columns import MONEY, TABLE_COLUMNS, Column
from .encode import _on_conflict_sql

_ROUNDS = "batchroute: an amount has more than 12 decimals"  # error() text: `Rounds`


def _struct(cols: tuple[Column, ...]) -> str:
    """json_transform's structure: integers as BIGINT, everything else as its text."""
    spec = ", ".join(f'"{n}": "{"BIGINT" if t == "BIGINT" else "VARCHAR"}"' for n, t in cols)
    return "{" + spec + "}"


def _value(name: str, typ: str, *, ceil: bool) -> str:
    """The SQL that turns a field of `j` (json_transform's struct) into its column's value;
    money rounded up to 12 places (`ceil`) or cast as it is (when no amount needs rounding)."""
    src = f"j.{name}"
    if typ == "TIMESTAMP":
        # Naive ISO text is UTC already (`encode.utc`); text with an offset (or Z) is moved to
        # UTC, never cut off; a missing time is the write's `now` ($1).
        return (
            f"COALESCE(CASE WHEN regexp_matches({src}, '(Z|[+-]\\d\\d:\\d\\d)$') "
            f"THEN timezone('UTC', CAST({src} AS TIMESTAMPTZ)) "
            f"ELSE CAST({src} AS TIMESTAMP) END, CAST($1 AS TIMESTAMP))"
        )
    if typ == MONEY:  # exact decimal text → DECIMAL, E notation included
        return _ceil_money(src) if ceil else f"CAST({src} AS {MONEY})"
    return src  # BIGINT and VARCHAR come out of json_transform as they are stored


# Decimal text as the journal writes it (`str(Decimal)`: plain, or E notation such as
# `1.234564321E-7` below 1e-6, `0E-12` for a zero at 12 places): sign, integer digits,
# fraction digits, exponent.
_NUMBER = r"^([+-]?)([0-9]*)\.?([0-9]*)(?:[eE]([+-]?[0-9]+))?$"


def _ceil_money(src: str) -> str:
    """Decimal text `src` → MONEY rounded UP to its 12 places, exactly, whatever its digits.

    `CAST(text AS DECIMAL(38,12))` rounds to nearest: an amount with more decimals would be
    stored up to 0.5e-12 under the bill. Here its digits (`d`: integer part, then fraction)
    are cut after the 12th decimal place, which is the `k`-th digit once the exponent is
    counted, and put back as plain text with exactly 12 places (cast exactly); 1e-12 is added
    when a digit cut off is not 0 (a negative amount, never money here, is cut toward zero: its
    ceiling too). Text that is no number (no digit) goes to the plain cast, which refuses it as
    before. (Checked against Decimal's ROUND_CEILING on thousands of amounts,
    tests/test_writer_apply.py.) DuckDB lifts its repeated parts out of any CASE, so it costs
    every row of a segment ~65 µs of CPU per record (result and attempt) whether the row needs
    it or not: it is used only for a write with an amount that does (`Rounds`).
    """
    m = f"regexp_extract({src}, '{_NUMBER}', ['s', 'i', 'f', 'e'])"
    d = f"({m}.i || {m}.f)"
    k = f"greatest(length({m}.i) + coalesce(TRY_CAST({m}.e AS INTEGER), 0) + 12, 0)::INTEGER"
    p = f"lpad(rpad({d}, {k}, '0'), greatest({k}, 13), '0')"  # ≥ 13 digits: "0" before the point
    cut = f"substr({p}, 1, length({p}) - 12) || '.' || substr({p}, length({p}) - 11)"
    rest = f"regexp_matches(substr({d}, {k} + 1), '[1-9]')"
    up = f"CAST(CASE WHEN {m}.s <> '-' AND {rest} THEN '0.000000000001' ELSE '0' END AS {MONEY})"
    return (
        f"CASE WHEN {src} IS NULL OR {d} = '' THEN CAST({src} AS {MONEY}) "
        f"ELSE CAST({m}.s || {cut} AS {MONEY}) + {up} END"
    )


# Decimal text a plain cast keeps exactly: at most 12 decimals, plain or in E notation with
# an exponent -n and at most 12 - n digits after the point (`0E-12`, `1.23456E-7`).
_EXACT = "|".join(
    [r"[+-]?[0-9]*(\.[0-9]{0,12})?"]
    + [rf"[+-]?[0-9]*(\.[0-9]{{0,{12 - n}}})?[eE]-0*{n}" for n in range(13)]
)


def _rounds(src: str) -> str:
    """SQL: a plain cast of decimal text `src` could round it (more than 12 decimal places;
    also a positive exponent, which never occurs: a needless `_ceil_money`, still exact)."""
    return f"({src} IS NOT NULL AND NOT regexp_full_match({src}, '{_EXACT}'))"


class NotNative(Exception):
    """This segment needs the row path (`ResultStore.write` of its rows): nothing was written."""


class KeyHeld(Exception):
    """A result's key is in the table already: the write must upsert (nothing was written)."""


class Rounds(Exception):
    """An amount has more than 12 decimals: the write must round up (`_ceil_money`; nothing
    was written)."""


# One pass over the files: DuckDB's CSV reader splits the lines (no delimiter or quote can
# occur: orjson escapes every control character) and checks they are UTF-8.
_READ = (
    "read_csv($1, columns = {'l': 'VARCHAR'}, delim = chr(1), quote = '', escape = '', "
    "header = false, auto_detect = false, max_line_size = {size})"
)


_ROWS = "batchroute_segment"  # a temp table: the segments' lines as text, the tag apart
# The tag is cut with `ltrim` (a byte compare) rather than `substr(l, 2)` (which counts the
# line's characters: ~25k instructions a record, measured); a line whose tag is not followed
# by `{` keeps it, so its JSON fails as it fails the row path. A run journals every call
# before it goes out (`in_flight`, for a replay after a kill, never written by the run): a
# third of the lines, dropped here (outside a JSON string a quote is never escaped, so only
# the row's own field matches). The lines are kept as text: each table's INSERT parses its
# own, once, straight into its struct (a table of every line's two structs, as before, cost
# ~35k instructions a record: struct appends and scans, measured).
LOAD_SQL = (
    f"CREATE OR REPLACE TEMP TABLE {_ROWS} AS SELECT left(l, 1) AS tag, "
    "if(substr(l, 2, 1) = '{', ltrim(l, 'raf'), l) AS l "
    f"FROM {_READ} WHERE left(l, 1) IN ('r', 'a', 'f') "
    f"""AND NOT contains(l, '"outcome":"{AttemptOutcome.IN_FLIGHT}"')"""
)


def _lines(tag: str) -> str:
    """The JSON text of the segments' lines of `tag` (`r` a result, `a` an answered attempt)."""
    return f"l FROM {_ROWS} WHERE tag = '{tag}'"


def _insert(table: str, *, upsert: bool, ceil: bool) -> str:
    """INSERT … SELECT of one table's lines, each parsed by json_transform and cast in SQL; a
    line that is not valid JSON fails the statement (NotNative: the row path, which skips
    it, takes the segment)."""
    cols = TABLE_COLUMNS[table]
    names = ", ".join(n for n, _ in cols)
    values = ", ".join(_value(n, t, ceil=ceil) for n, t in cols)
    tag = "r" if table == "results" else "a"
    src = f"(SELECT json_transform(l, '{_struct(cols)}') AS j FROM (SELECT {_lines(tag)}))"
    sql = f"INSERT INTO {table} ({names}) SELECT {values} FROM {src}"
    where = [] if ceil else [_no_rounding(cols)]
    if table == "attempts":  # (the lines of in-flight rows are left out already)
        where.append(f"j.outcome <> '{AttemptOutcome.IN_FLIGHT}'")
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + (_on_conflict_sql(cols) if upsert else "")


def _no_rounding(cols: tuple[Column, ...]) -> str:
    """A filter that passes every row, but stops the statement (`Rounds`) at an amount that a
    plain cast would round (to nearest: possibly down); the write is then made again with
    `_ceil_money` (nearly never: Python rounds amounts up before journaling them). A filter,
    not a CASE around each cast: ~4 times cheaper, measured."""
    money = [_maybe_rounds(f"j.{n}") for n, t in cols if t == MONEY]
    return f"if({' OR '.join(money)}, error('{_ROUNDS}'), true)"


def _maybe_rounds(src: str) -> str:
    """`_rounds`, asked only of text that could need it (more than 12 characters after the
    point, or no point and more than 12 in all; an exponent): the regular expression costs
    ~100 ns an amount, the byte checks ~20 (measured); a plain amount of at most 12 decimals,
    as Python journals them, is cast as it is."""
    point = f"strlen({src}) - strpos({src}, '.') > 12"
    maybe = f"{point} OR contains({src}, 'E') OR contains({src}, 'e')"
    return f"(({maybe}) AND {_rounds(src)})"


# Nearly every result of a run is new: a plain INSERT (half the cost of an upsert, and no
# look-up of the keys the table holds). A key held already fails it; then the whole segment
# is written again with the upsert (cost and attempts accumulate; a row without an answer
# keeps the paid one). A key repeated in the segment must be combined first (`encode.dedupe`:
# DuckDB's upsert would keep one of its rows): the row path.
# Keyed by (upsert, ceil); ATTEMPTS_SQL by ceil (`_ceil_money`, after `Rounds`).
INSERT_SQL = {
    (u, c): _insert("results", upsert=u, ceil=c) for u in (False, True) for c in (False, True)
}
ATTEMPTS_SQL = {c: _insert("attempts", upsert=False, ceil=c) for c in (False, True)}
_KEY = (Column("job_name", "VARCHAR"), Column("record_key", "VARCHAR"))
REPEATED_SQL = (
    "SELECT count(*) > count(DISTINCT (j.job_name, j.record_key)) FROM "
    f"(SELECT json_transform(l, '{_struct(_KEY)}') AS j FROM (SELECT {_lines('r')}))"
)
FIXES_SQL = f"SELECT l FROM {_ROWS} WHERE tag = 'f'"


def write_segments(
    con: duckdb.DuckDBPyConnection,
    paths: list[Path],
    now: datetime,
    *,
    upsert: bool,
    ceil: bool,
    fixes_of: Callable[[list[str]], list[CostFix]],
    apply_fixes: Callable[[duckdb.DuckDBPyConnection, list[CostFix]], int],
) -> None:
    """Write the segments at `paths` (in order: one, or several the writer had waiting) inside
    the caller's transaction: their results (`upsert`: with the upsert, else a plain INSERT),
    answered attempts, then their cost fixes (`fixes_of` turns their JSON texts into CostFix,
    `apply_fixes` applies them; a fix finds the attempts of its own and earlier segments, as
    when they are written one by one); `ceil`: every amount rounded up to 12 places
    (`_ceil_money`), else cast as it is. Raises KeyHeld (plain INSERT only), Rounds (not
    `ceil` only) or NotNative; the caller then rolls the transaction back."""
    size = str(max(p.stat().st_size for p in paths) + 2)
    files = [str(p) for p in paths]
    try:
        con.execute(LOAD_SQL.replace("{size}", size), [files])
        if upsert:  # (a plain INSERT refuses a repeated key by itself: KeyHeld, then this)
            repeated = con.execute(REPEATED_SQL).fetchone()
            if repeated is None or repeated[0]:
                raise NotNative("a result key repeats in the segments")
        params = [now.isoformat(sep=" ")]
        try:
            con.execute(INSERT_SQL[upsert, ceil], params)
        except duckdb.ConstraintException as exc:
            if upsert:
                raise
            raise KeyHeld(str(exc)) from None
        con.execute(ATTEMPTS_SQL[ceil], params)
        fixes = con.execute(FIXES_SQL).fetchall()
        con.execute(f"DROP TABLE {_ROWS}")
    except duckdb.InvalidInputException as exc:  # not JSON, not UTF-8, not a whole line
        if _ROUNDS in str(exc):
            raise Rounds(str(exc)) from None
        raise NotNative(str(exc)) from None
    if fixes:
        apply_fixes(con, fixes_of([str(js) for (js,) in fixes]))


def write_tried(
    tx: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    paths: list[Path],
    now: datetime,
    fixes_of: Callable[[list[str]], list[CostFix]],
    apply_fixes: Callable[[duckdb.DuckDBPyConnection, list[CostFix]], int],
    then: Callable[[duckdb.DuckDBPyConnection], object] | None,
) -> bool:
    """`write_segments` in a transaction of `tx`, then `then` in it; tried again with the
    upsert after KeyHeld and with every amount rounded up after Rounds (each comes once at
    most: three tries at most). False, with nothing written, on NotNative."""
    upsert = ceil = False
    while True:
        try:
            with tx() as con:
                write_segments(
                    con, paths, now, upsert=upsert, ceil=ceil, fixes_of=fixes_of,
                    apply_fixes=apply_fixes,
                )  # fmt: skip
                if then is not None:
                    then(con)
            return True
        except KeyHeld:
            upsert = True  # a key the table holds: once more with the upsert
        except Rounds:
            ceil = True  # an amount to round up: once more with every amount rounded up
        except NotNative:
            return False
