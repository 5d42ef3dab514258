"""Staging an input's pass into the resume lookup's in-memory DuckDB (`store/resume.py`):
the lines' fingerprints and the unmatched lines' keys, through CSV files DuckDB reads itself.

Split from `store/resume.py` (issue 11) to keep each module under 400 lines.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import duckdb

STAGE_CHUNK = 8_192  # keys per write while staging them: their Python strings are held at once


def _csv_literal(path: Path) -> str:
    return str(path).replace("'", "''")


def _stage_fps(con: duckdb.DuckDBPyConnection, fps: Iterable[array[int]], spill: Path) -> None:
    """Stage the fingerprints, in input order, as `lines (fp)` whose rowid is the position.

    Through a CSV file of hex digits DuckDB reads itself: 0.02 µs of Python per line to write
    (`bytes.hex`), against 0.19 µs as decimal text and 0.86 µs bound as a list parameter;
    DuckDB preserves insertion order."""
    con.execute("CREATE TABLE lines (fp BIGINT)")
    csv = spill / "fps.csv"
    try:
        spill.mkdir(parents=True, exist_ok=True)
        fh = csv.open("w", encoding="ascii", newline="")
    except OSError:
        for batch in fps:
            con.execute("INSERT INTO lines SELECT unnest($1::BIGINT[])", [batch.tolist()])
        return
    with fh:
        for batch in fps:
            if batch:
                big = array("q", batch)
                if sys.byteorder == "little":
                    big.byteswap()
                fh.write(big.tobytes().hex("\n", 8))  # 16 hex digits a line, in C
                fh.write("\n")
    # The hex digits are the int64's two's complement: above 2^63 as UBIGINT is negative.
    con.execute(
        "INSERT INTO lines SELECT (('0x' || h)::UBIGINT::HUGEINT - CASE WHEN h >= '8' "
        "THEN 18446744073709551616::HUGEINT ELSE 0 END)::BIGINT "
        f"FROM read_csv('{_csv_literal(csv)}', columns = {{'h': 'VARCHAR'}}, header = false, "
        "auto_detect = false, delim = ',', new_line = '\\n')"
    )
    csv.unlink()


def _stage_keys(
    con: duckdb.DuckDBPyConnection, keyed: Iterable[tuple[int, str | None]], spill: Path
) -> None:
    """Stage (position, key) of the unmatched lines into `keyed (pos, k)` (k NULL for a blank
    line): through a CSV file as above, every key quoted (a key may hold quotes, commas, line
    breaks; it is never empty), a NULL as an empty field."""
    it = iter(keyed)
    csv = spill / "keys.csv"
    try:
        spill.mkdir(parents=True, exist_ok=True)
        fh = csv.open("w", encoding="utf-8", newline="")
    except OSError:
        while chunk := list(islice(it, STAGE_CHUNK)):
            con.execute(
                "INSERT INTO keyed SELECT unnest($1::BIGINT[]), unnest($2::VARCHAR[])",
                [[p for p, _ in chunk], [k for _, k in chunk]],
            )
        return
    with fh:
        while chunk := list(islice(it, STAGE_CHUNK)):
            fh.write(
                "".join(
                    f"{p},\n" if k is None else f'{p},"{k.replace(chr(34), chr(34) * 2)}"\n'
                    for p, k in chunk
                )
            )
    con.execute(
        f"INSERT INTO keyed SELECT pos, k FROM read_csv('{_csv_literal(csv)}', "
        "columns = {'pos': 'BIGINT', 'k': 'VARCHAR'}, header = false, auto_detect = false, "
        "delim = ',', quote = '\"', escape = '\"', new_line = '\\n')"
    )
    csv.unlink()
