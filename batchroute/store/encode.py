"""The bulk-write encoder: rows of a table sent as whole columns, in one INSERT per table.

Owns how Python values become DuckDB values (UTC, exact money, text); opens no connection.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb
import orjson

from ..types import ResultRow
from ..usd import ceil_usd
from .columns import ACCUMULATE, ANSWER, MONEY, RESULT_KEY, TABLE_COLUMNS, Column


def utc(dt: datetime) -> datetime:
    """A naive UTC datetime for a TIMESTAMP column (naive input is taken as UTC already)."""
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


def money(value: Decimal) -> str:
    """Decimal text, cast to MONEY in SQL (never through a float), rounded up to its 12
    places first: the cast rounds to nearest, and a stored amount must never be below the
    amount it stands for."""
    return format(ceil_usd(value), "f")


def _bulk_insert_sql(table: str, cols: Sequence[Column], *, via_json: bool) -> str:
    """INSERT … SELECT unnest(col1), unnest(col2)…: whole columns as lists, zipped by unnest.

    via_json: the lists come from one columnar JSON object in a temp file (read_json; the
    fastest path measured, see docs/benchmarks.md); else one list parameter per column.
    Money travels as exact decimal text and is cast in SQL, never through a float.
    """
    exprs, spec = [], []
    for i, (name, typ) in enumerate(cols, start=1):
        wire = typ if typ in ("BIGINT", "INTEGER") else "VARCHAR"
        src = name if via_json else f"${i}::{wire}[]"
        exprs.append(f"CAST(unnest({src}) AS {typ})")
        spec.append(f"{name}: '{wire}[]'")
    names = ", ".join(n for n, _ in cols)
    sql = f"INSERT INTO {table} ({names}) SELECT {', '.join(exprs)}"
    if via_json:
        # {size} is filled with an int by the caller; the file name is a parameter.
        sql += (
            " FROM read_json($1, format = 'unstructured', maximum_object_size = {size}, "
            f"columns = {{{', '.join(spec)}}})"
        )
    return sql


def _on_conflict_sql(cols: Sequence[Column]) -> str:
    sets = []
    for name, _ in cols:
        if name in RESULT_KEY:
            continue
        if name in ACCUMULATE:
            sets.append(f"{name} = results.{name} + excluded.{name}")
        elif name in ANSWER:  # a row without an answer keeps the paid one from before
            sets.append(
                f"{name} = CASE WHEN excluded.output IS NULL THEN results.{name} "
                f"ELSE excluded.{name} END"
            )
        else:
            sets.append(f"{name} = excluded.{name}")
    return f" ON CONFLICT ({', '.join(RESULT_KEY)}) DO UPDATE SET " + ", ".join(sets)


SQL: dict[tuple[str, bool], str] = {
    (table, j): _bulk_insert_sql(table, cols, via_json=j)
    + (_on_conflict_sql(cols) if table == "results" else "")
    for table, cols in TABLE_COLUMNS.items()
    for j in (True, False)
}
"""(table, via_json) → its bulk INSERT (results: an upsert)."""
NEW_RESULTS_SQL = {
    j: _bulk_insert_sql("results", TABLE_COLUMNS["results"], via_json=j) for j in (True, False)
}
"""via_json → the plain INSERT of results whose keys the table does not hold yet."""


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def column_values(rows: Sequence[Any], name: str, typ: str, now: datetime) -> list[Any]:
    """One column of `rows` as wire values (a missing timestamp becomes `now`)."""
    values = [getattr(r, name) for r in rows]
    if typ == MONEY:
        return [None if v is None else money(v) for v in values]
    if typ == "TIMESTAMP":
        return [(now if v is None else utc(v)).isoformat(sep=" ") for v in values]
    if typ == "VARCHAR":
        # StrEnum members are str already; plain str() keeps the value, not the enum repr.
        return [None if v is None else str(v) for v in values]
    return values


def write_results(con: duckdb.DuckDBPyConnection, rows: Sequence[ResultRow], now: datetime) -> None:
    """Upsert result rows (one per key): those whose key is new with a plain INSERT, the rest
    with the upsert. DuckDB's ON CONFLICT costs about twice a plain insert (17 vs 9 ms of CPU
    for 600 rows, measured), and a run's rows are almost all new; finding which keys exist
    costs ~3 ms (one semi join on the primary key)."""
    _write_results(con, rows, [(r.job_name, r.record_key) for r in rows], now)


def _write_results(
    con: duckdb.DuckDBPyConnection, rows: Sequence[Any], keys: list[tuple[str, str]], now: datetime
) -> None:
    have = set(
        con.execute(
            "SELECT job_name, record_key FROM results SEMI JOIN (SELECT unnest($1::VARCHAR[]) "
            "AS job_name, unnest($2::VARCHAR[]) AS record_key) j USING (job_name, record_key)",
            [[k[0] for k in keys], [k[1] for k in keys]],
        ).fetchall()
    )
    new = [r for r, k in zip(rows, keys, strict=True) if k not in have] if have else rows
    if new:
        bulk_write(con, "results", new, now, upsert=False)
    if len(new) < len(rows):
        old = [r for r, k in zip(rows, keys, strict=True) if k in have]
        bulk_write(con, "results", old, now)


def bulk_write(
    con: duckdb.DuckDBPyConnection,
    table: str,
    rows: Sequence[Any],
    now: datetime,
    *,
    upsert: bool = True,
) -> None:
    """Insert `rows` (dataclass rows of `table`) in one statement; results are upserted unless
    `upsert` is False (every key is known to be new)."""
    plain = not upsert and table == "results"
    columns = {name: column_values(rows, name, typ, now) for name, typ in TABLE_COLUMNS[table]}
    try:
        blob = orjson.dumps(columns)
    except orjson.JSONEncodeError:
        # A lone surrogate (text that is not valid Unicode) or an int beyond 64 bits: take
        # the slower list-parameter path, with unencodable characters replaced by '?'.
        params = [
            [_clean(v) for v in col] if col and any(isinstance(v, str) for v in col) else col
            for col in columns.values()
        ]
        con.execute(NEW_RESULTS_SQL[False] if plain else SQL[(table, False)], params)
        return
    with tempfile.NamedTemporaryFile(prefix="batchroute-", suffix=".json") as f:
        f.write(blob)
        f.flush()
        sql = NEW_RESULTS_SQL[True] if plain else SQL[(table, True)]
        con.execute(sql.replace("{size}", str(len(blob) + 1)), [f.name])


def dedupe(results: Sequence[ResultRow]) -> list[ResultRow]:
    """Combine rows with the same key as if they had been written one after the other."""
    merged: dict[tuple[str, str], ResultRow] = {}
    for row in results:
        key = (row.job_name, row.record_key)
        prev = merged.get(key)
        if prev is not None:
            kept = {n: getattr(prev, n) for n in ANSWER} if row.output is None else {}
            summed = {n: getattr(prev, n) + getattr(row, n) for n in ACCUMULATE}
            row = replace(row, **summed, **kept)
        merged[key] = row
    return list(merged.values())
