"""Resume at scale: what the store knows of an input's keys, without holding the job's history.

One join at run start (issue 11). The input's keys are staged with their positions into an
in-memory DuckDB (bounded by `MEMORY_LIMIT`, spilling to `<db>.resume.tmp`); the results file
is attached read-only for the one query that joins them with the job's final results and marks
the keys that came earlier in the input; then it is detached, before the run writes anything
(DuckDB allows one handle per file and process). The answers, one row per input record that is
final or a duplicate, stream back in input order a few thousand rows at a time, and
`ResumeLookup.next` merges them with the input by position. Memory depends on neither the
history nor the input: the Python side holds one fetched batch, DuckDB at most its limit.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Collection, Iterable
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from ..errors import InputError, StoreError
from ..types import NOT_KNOWN, Known, RecordStatus
from .connect import attach_read_only

MEMORY_LIMIT = "128MB"  # DuckDB's buffer pool for the staged keys, the join and its answers
THREADS = 2
STAGE_CHUNK = 50_000  # keys per write while staging
FETCH = 8_192  # answers per fetch while merging
_ALIAS = "batchroute_history"
_FAILED = (RecordStatus.FAILED, RecordStatus.INVALID)  # final: failed_before
_DUPLICATE = Known(duplicate=True)

# One row per input position whose key came earlier in the input (dup) or is final already.
# `dups` holds only the keys that occur twice or more (usually none); the primary key
# (job_name, record_key) makes `finals` one row per key.
_ANSWERS = f"""
CREATE TEMP TABLE answers AS
WITH dups AS (SELECT k, min(pos) AS first FROM staged GROUP BY k HAVING count(*) > 1),
finals AS (
    SELECT record_key, status, request_fp, {{line_fp}} AS line_fp FROM {_ALIAS}.results
    WHERE job_name = $1 AND status IN ({{statuses}}))
SELECT s.pos, s.k, COALESCE(s.pos > d.first, false) AS dup,
    COALESCE(f.status IN ({{failed}}), false) AS failed, f.request_fp, f.line_fp
FROM staged s LEFT JOIN dups d ON d.k = s.k LEFT JOIN finals f ON f.record_key = s.k
WHERE s.pos > d.first OR f.record_key IS NOT NULL
ORDER BY s.pos
"""


def _in(statuses: Iterable[str]) -> str:
    """An IN list of statuses, as literals: the join with `status IN ('done', …)` took 5.6 s
    of CPU where `list_contains($2::VARCHAR[], status)` took 7.0 s (2M staged keys, the 10M
    results of `tests/bench/bench_resume_scale.py`, one trial each). Our own enum values."""
    values = [str(s) for s in statuses]
    if not all(v.isidentifier() for v in values):
        raise ValueError(f"not a status: {values}")  # pragma: no cover - a programming error
    return ", ".join(f"'{v}'" for v in values) or "NULL"


# A file not migrated yet (a dry run does not migrate) has no line_fp (migration 9): NULL, and
# every final line takes the full path (rendered and fingerprinted), as before the column.
_HAS_LINE_FP = f"""
SELECT count(*) FROM duckdb_columns()
WHERE database_name = '{_ALIAS}' AND table_name = 'results' AND column_name = 'line_fp'
"""


def _stage(con: duckdb.DuckDBPyConnection, keys: Iterable[str], spill: Path) -> None:
    """Stage the keys, in input order, as the table `staged_keys (k)` whose rowid is the
    position (the view `staged (pos, k)`).

    They go through a CSV file that DuckDB reads itself: 0.3 s of CPU for 2M keys, where
    binding them as list parameters took 1.65 s (`INSERT … unnest($1::VARCHAR[])`, still the
    way when the file cannot be written). Every key is quoted (a key may hold quotes, commas,
    line breaks); DuckDB preserves insertion order, and `ResumeLookup.next` checks each
    answer's key against the record's anyway."""
    con.execute("CREATE TEMP TABLE staged_keys (k VARCHAR)")
    con.execute("CREATE TEMP VIEW staged AS SELECT rowid AS pos, k FROM staged_keys")
    it = iter(keys)
    csv = spill / "keys.csv"
    try:
        spill.mkdir(parents=True, exist_ok=True)
        fh = csv.open("w", encoding="utf-8", newline="")
    except OSError:
        while chunk := list(islice(it, STAGE_CHUNK)):
            con.execute("INSERT INTO staged_keys SELECT unnest($1::VARCHAR[])", [chunk])
        return
    with fh:
        while chunk := list(islice(it, STAGE_CHUNK)):
            text = "\n".join(chunk)
            if '"' in text or text.count("\n") != len(chunk) - 1:
                text = "\n".join('"' + k.replace('"', '""') + '"' for k in chunk)
            else:  # the common case: quote them all at once
                text = '"' + text.replace("\n", '"\n"') + '"'
            fh.write(text + "\n")
    literal = str(csv).replace("'", "''")
    con.execute(
        f"INSERT INTO staged_keys SELECT k FROM read_csv('{literal}', "
        "columns = {'k': 'VARCHAR'}, header = false, auto_detect = false, delim = ',', "
        "quote = '\"', escape = '\"', new_line = '\\n')"
    )
    csv.unlink()


def _spill_dir(path: Path) -> Path:
    return Path(f"{path}.resume.tmp")


def _close(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.close()
    shutil.rmtree(_spill_dir(path), ignore_errors=True)  # what DuckDB spilled, if anything


class ResumeLookup:
    """A `KeyLookup` over the answers of the join; ask `next` once per input record, in order.

    Close it (or use it as a context manager) when the pass is over.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, path: Path, source: str, *, records: int = 0
    ) -> None:
        self._con = con
        self._path = path
        self._source = source
        self.records = records  # records in the input (the staged keys)
        # What the answers hold, for the progress total: later copies of a key, and keys final.
        row = con.execute(
            "SELECT count(*) FILTER (WHERE dup), count(*) FILTER (WHERE NOT dup) FROM answers"
        ).fetchone()
        self.duplicates, self.final = (int(row[0]), int(row[1])) if row else (0, 0)
        self._cur = con.execute("SELECT pos, k, dup, failed, request_fp, line_fp FROM answers")
        self._rows: list[tuple[Any, ...]] = []
        self._i = -1
        self._pos = 0
        self._next = -1
        self._advance()

    def _advance(self) -> None:
        self._i += 1
        if self._i >= len(self._rows):
            self._rows = self._cur.fetchmany(FETCH)
            self._i = 0
            if not self._rows:
                self._next = sys.maxsize
                return
        self._next = self._rows[self._i][0]

    def expect(self) -> tuple[int, str] | None:
        """(line_fp, key) when the next record is final with a known line fingerprint: the
        reader skips parsing a line with that fingerprint (`read_records(expect=...)`)."""
        if self._pos != self._next:
            return None
        _, k, dup, _, _, line_fp = self._rows[self._i]
        return None if dup or line_fp is None else (line_fp, k)

    def next(self, key: str) -> Known:
        pos = self._pos
        self._pos = pos + 1
        if pos != self._next:
            if pos > self._next:  # answers out of order: never guess (a final record would pay)
                raise StoreError(f"resume answers for {self._path} are out of input order")
            return NOT_KNOWN
        _, k, dup, failed, fp, line_fp = self._rows[self._i]
        self._advance()
        if k != key:
            raise InputError(
                f"the input changed while the run read it (record {pos + 1} was {k!r}, "
                f"now {key!r}): run again",
                path=self._source,
            )
        return _DUPLICATE if dup else Known(False, True, fp, failed, line_fp)

    def close(self) -> None:
        _close(self._con, self._path)

    def __enter__(self) -> ResumeLookup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def resume_lookup(
    path: Path,
    job_name: str,
    keys: Iterable[str],
    statuses: Collection[RecordStatus],
    *,
    source: str,
    timeout: float,
) -> ResumeLookup:
    """Stage `keys` (the input's, in order), join them once with the job's results in
    `statuses`, and return the lookup that streams the answers back."""
    spill = _spill_dir(path)
    con = duckdb.connect(
        ":memory:",
        config={"memory_limit": MEMORY_LIMIT, "threads": THREADS, "temp_directory": str(spill)},
    )
    try:
        _stage(con, keys, spill)
        attach_read_only(con, path, _ALIAS, timeout=timeout)
        try:
            row = con.execute(_HAS_LINE_FP).fetchone()
            line_fp = "line_fp" if row is not None and row[0] else "NULL::BIGINT"
            sql = _ANSWERS.format(line_fp=line_fp, statuses=_in(statuses), failed=_in(_FAILED))
            con.execute(sql, [job_name])
        finally:
            con.execute(f"DETACH {_ALIAS}")
        row = con.execute("SELECT count(*) FROM staged_keys").fetchone()
        records = int(row[0]) if row else 0
        con.execute("DROP VIEW staged")
        con.execute("DROP TABLE staged_keys")
        return ResumeLookup(con, path, source, records=records)
    except duckdb.Error as exc:
        _close(con, path)
        raise StoreError(f"{path}: resume lookup: {exc}") from exc
    except BaseException:
        _close(con, path)
        raise
