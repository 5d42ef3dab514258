"""The cached `/models` catalogue (migration 1's `catalog_cache`): one row, the last fetched."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from .encode import utc


def save(con: duckdb.DuckDBPyConnection, raw: bytes, fetched_at: datetime, source: str) -> None:
    """Keep `raw` (a /models response body) as the only cached catalogue."""
    con.execute("DELETE FROM catalog_cache")
    con.execute("INSERT INTO catalog_cache VALUES (?, ?, ?)", [utc(fetched_at), source, raw])


def load(con: duckdb.DuckDBPyConnection) -> tuple[bytes, datetime] | None:
    """The last cached catalogue and when it was fetched (aware UTC), if any."""
    row = con.execute(
        "SELECT raw, fetched_at FROM catalog_cache ORDER BY fetched_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return bytes(row[0]), row[1].replace(tzinfo=UTC)
