"""Resume at scale: what the store knows of an input's lines, without holding the job's history.

At run start (issue 11), in an in-memory DuckDB bounded by `MEMORY_LIMIT` (spilling to
`<db>.resume.tmp`), with the results file attached read-only only while a query reads it:

1. the fingerprint of every input line (`reader.line_fp`, hashed by the caller in C code) is
   staged by position, and one join on `results.line_fp` finds the lines that are final and
   unchanged (`matched`): same bytes under the same prompt, parameters and id field;
2. only the other lines (`unmatched`: new ones, changed ones, blank ones, and every line of a
   history written before line_fp or under another prompt) are read again by the caller for
   their keys, which are joined with the job's final results on `record_key` (stale detection,
   earlier failures, rows without line_fp);
3. repeated keys are found over both (a matched line's key is its stored row's), and the
   answers are one row per unmatched position and per matched position that is not a plain
   skip (a repeat, or an earlier failure), in input order.

The caller's second pass reads nothing of a plain skip: the gap between two answers is a run
of final, unchanged lines, counted in bulk. Memory depends on neither the history nor the
input: the Python side holds one fetched batch, DuckDB at most its limit.

A line is taken for final on its 64-bit fingerprint alone, against all the job's final rows:
two lines' fingerprints are equal by chance with probability 2^-64, so a run of M lines over
F final results skips a line wrongly with probability about M·F/2^64 (1e-6 for 2M over 10M).
"""

from __future__ import annotations

import shutil
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import uuid4

import duckdb

from ..errors import InputError, StoreError
from ..types import NOT_KNOWN, Known, RecordStatus
from .connect import attach_read_only
from .resume_stage import _csv_literal, _stage_fps, _stage_keys

# DuckDB's buffer pool for the staged lines, the joins and the answers (at 32MB the join over
# 10M final results ran out of memory: docs/benchmarks.md).
MEMORY_LIMIT = "128MB"
THREADS = 2
FETCH = 8_192  # answers per fetch while merging
_ALIAS = "batchroute_history"
_FAILED = (RecordStatus.FAILED, RecordStatus.INVALID)  # final: failed_before
_DUPLICATE = Known(duplicate=True)

# What an answer row is (`kind`): a line the caller reads and admits; a blank line; a matched
# line that repeats an earlier key (a duplicate); a matched line that failed before (skipped).
RECORD, BLANK, REPEAT, FAILED_BEFORE = 0, 1, 2, 3

_MATCHED = f"""
CREATE TABLE matched AS
SELECT l.pos, l.fp, f.status IN ({{failed}}) AS failed
FROM (SELECT rowid AS pos, fp FROM lines) l JOIN {_ALIAS}.results f ON f.line_fp = l.fp
WHERE f.job_name = $1 AND f.status IN ({{statuses}})
"""

# The unmatched positions, in order: the caller reads their keys (None: a blank line).
_UNMATCHED = """
SELECT pos FROM (SELECT rowid AS pos FROM lines) ANTI JOIN matched USING (pos) ORDER BY pos
"""

# Every unmatched line, with what the store knows of its key (nothing for a blank line).
_KNOWN = f"""
CREATE TABLE known AS
SELECT u.pos, u.k, f.record_key IS NOT NULL AS final, COALESCE(f.failed, false) AS failed,
    f.request_fp, f.lfp
FROM keyed u LEFT JOIN (
    SELECT record_key, status IN ({{failed}}) AS failed, request_fp, {{line_fp}} AS lfp
    FROM {_ALIAS}.results WHERE job_name = $1 AND status IN ({{statuses}})) f
ON f.record_key = u.k
"""

# `linked`: the matched lines whose key is also the key of an unmatched line (their stored
# row's line_fp is theirs). Repeats: among matched lines, the same fingerprint (the same row);
# else the same key among the unmatched lines and the lines linked to them.
_ANSWERS = f"""
CREATE TABLE answers AS
WITH linked AS (
    SELECT m.pos, x.k FROM matched m
    JOIN (SELECT DISTINCT k, lfp FROM known WHERE lfp IS NOT NULL) x ON m.fp = x.lfp),
rep_fp AS (SELECT fp, min(pos) AS first FROM matched GROUP BY fp HAVING count(*) > 1),
rep_k AS (
    SELECT k, min(pos) AS first
    FROM (SELECT pos, k FROM known WHERE k IS NOT NULL UNION ALL SELECT pos, k FROM linked)
    GROUP BY k HAVING count(*) > 1),
mrows AS (
    SELECT m.pos, COALESCE(m.pos > rf.first, false) OR COALESCE(m.pos > rk.first, false) AS dup,
        m.failed
    FROM matched m LEFT JOIN rep_fp rf ON rf.fp = m.fp LEFT JOIN linked ln ON ln.pos = m.pos
    LEFT JOIN rep_k rk ON rk.k = ln.k)
SELECT kn.pos, CASE WHEN kn.k IS NULL THEN {BLANK} ELSE {RECORD} END AS kind, kn.k,
    COALESCE(kn.pos > d.first, false) AS dup, kn.final, kn.failed, kn.request_fp, kn.lfp
FROM known kn LEFT JOIN rep_k d ON d.k = kn.k
UNION ALL
SELECT pos, CASE WHEN dup THEN {REPEAT} ELSE {FAILED_BEFORE} END, NULL, dup, NOT dup, failed,
    NULL, NULL
FROM mrows WHERE dup OR failed
ORDER BY pos
"""


def _in(statuses: Iterable[str]) -> str:
    """An IN list of statuses, as literals: the join with `status IN ('done', …)` took 5.6 s
    of CPU where `list_contains($2::VARCHAR[], status)` took 7.0 s (2M staged keys, the 10M
    results of `tests/bench/bench_resume_scale.py`, one trial each). Our own enum values."""
    values = [str(s) for s in statuses]
    if not all(v.isidentifier() for v in values):
        raise ValueError(f"not a status: {values}")  # pragma: no cover - a programming error
    return ", ".join(f"'{v}'" for v in values) or "NULL"


# A file not migrated yet (a dry run does not migrate) has no line_fp (migration 9): no line
# matches, and every final line takes the full path (rendered and fingerprinted).
_HAS_LINE_FP = f"""
SELECT count(*) FROM duckdb_columns()
WHERE database_name = '{_ALIAS}' AND table_name = 'results' AND column_name = 'line_fp'
"""


# Does any final row of the job keep a line fingerprint? If not (a new job, a history written
# before line_fp), no line can match and the scan need not hash the input.
_ANY_LINE_FP = """
SELECT count(*) FROM (SELECT 1 FROM results
WHERE job_name = $1 AND line_fp IS NOT NULL AND status IN ({statuses}) LIMIT 1)
"""


def has_line_fps(con: duckdb.DuckDBPyConnection, job_name: str, statuses: Collection[str]) -> bool:
    """Whether a scan of the input can match anything (`_ANY_LINE_FP`), on a connection to
    the results file."""
    if not _count(con, _HAS_LINE_FP.replace(f"'{_ALIAS}'", "current_database()")):
        return False
    return _count(con, _ANY_LINE_FP.format(statuses=_in(statuses)), [job_name]) > 0


def _spill_dir(path: Path) -> Path:
    return Path(f"{path}.resume.tmp")


def _close(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.close()
    shutil.rmtree(_spill_dir(path), ignore_errors=True)  # what DuckDB spilled, if anything


def _settle(con: duckdb.DuckDBPyConnection, path: Path) -> duckdb.DuckDBPyConnection:
    """The answers moved to a file of their own (a killed run's stays until the next close),
    read by a small instance: the joining one keeps ~40 MiB of allocator memory per 200k."""
    spill = _spill_dir(path)
    try:
        spill.mkdir(parents=True, exist_ok=True)
    except OSError:
        return con
    file = spill / f"answers-{uuid4().hex}.duckdb"
    con.execute(f"ATTACH '{_csv_literal(file)}' AS settled")
    con.execute("CREATE TABLE settled.answers AS SELECT * FROM answers")  # in input order
    con.execute("DETACH settled")
    con.close()
    return duckdb.connect(str(file), read_only=True, config={"memory_limit": "16MB", "threads": 1})


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class ResumeLookup:
    """The answers of the scan, in input order (`answers`), and the `KeyLookup` of the records
    among them: ask `next` once for each `RECORD` answer, after it was handed out.

    Close it (or use it as a context manager) when the pass is over.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, path: Path, source: str, *, lines: int
    ) -> None:
        self._con = con
        self._path = path
        self._source = source
        self.lines = lines  # the input's lines, blank ones too
        matched = _count(con, "SELECT count(*) FROM matched")
        con.execute("DROP TABLE matched")
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE kind = {REPEAT}), "
            f"count(*) FILTER (WHERE kind = {RECORD} AND dup), "
            f"count(*) FILTER (WHERE kind = {RECORD} AND final AND NOT dup), "
            f"count(*) FILTER (WHERE kind = {RECORD}) FROM answers"
        ).fetchone()
        rep_m, rep_u, final_u, recs_u = (int(v) for v in row) if row else (0, 0, 0, 0)
        self.records = matched + recs_u  # records in the input (its non-blank lines)
        self.duplicates = rep_m + rep_u  # later copies of a key
        self.final = matched - rep_m + final_u  # records final already (skipped)
        self.matched = matched  # of which skipped unread: final and unchanged
        self._row: tuple[Any, ...] | None = None
        self._con = _settle(con, path)

    def answers(self) -> Iterator[tuple[int, int]]:
        """(position, kind) of every answer, in input order; between two of them every line
        is final and unchanged (skipped). Each `RECORD` is the one `next` answers for."""
        cur = self._con.execute(
            "SELECT pos, kind, k, dup, final, failed, request_fp, lfp FROM answers"
        )
        while rows := cur.fetchmany(FETCH):
            for row in rows:
                self._row = row
                yield row[0], row[1]
        self._row = None

    def next(self, key: str) -> Known:
        """What the store knew of the record `answers` handed out last, whose key is `key`."""
        row = self._row
        if row is None or row[1] != RECORD:
            raise StoreError(f"resume answers for {self._path} asked out of order")
        pos, _, k, dup, final, failed, fp, line_fp = row
        self._row = None
        if k != key:
            raise InputError(
                f"the input changed while the run read it (line {pos + 1} was {k!r}, "
                f"now {key!r}): run again",
                path=self._source,
            )
        if dup:
            return _DUPLICATE
        return Known(False, True, fp, failed, line_fp) if final else NOT_KNOWN

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
    fps: Iterable[array[int]],
    keys_at: Callable[[Iterator[int]], Iterable[tuple[int, str | None]]],
    statuses: Collection[RecordStatus],
    *,
    source: str,
    timeout: float,
    match: bool = True,
    history: bool = True,
) -> ResumeLookup:
    """Stage `fps` (every input line's `line_fp`, in order), join them with the job's results
    in `statuses` (unless not `match`: then every line is unmatched), ask `keys_at` for the
    (position, key or None when blank) of the lines that did not match, join those keys, and
    return the lookup that streams the answers back. Not `history` (no database file yet):
    nothing is final, and the file is never opened."""
    spill = _spill_dir(path)
    con = duckdb.connect(
        ":memory:",
        config={"memory_limit": MEMORY_LIMIT, "threads": THREADS, "temp_directory": str(spill)},
    )
    st, failed = _in(statuses), _in(_FAILED)
    try:
        _stage_fps(con, fps, spill)
        if history:
            attach_read_only(con, path, _ALIAS, timeout=timeout)
        try:
            has_line_fp = history and _count(con, _HAS_LINE_FP) > 0
            if has_line_fp and match:
                con.execute(_MATCHED.format(statuses=st, failed=failed), [job_name])
            else:
                con.execute("CREATE TABLE matched (pos BIGINT, fp BIGINT, failed BOOLEAN)")
        finally:
            if history:
                con.execute(f"DETACH {_ALIAS}")
        lines = _count(con, "SELECT count(*) FROM lines")
        con.execute("CREATE TABLE keyed (pos BIGINT, k VARCHAR)")
        cur = con.cursor()  # its own connection: the staging below may write while it reads
        cur.execute(_UNMATCHED)

        def positions() -> Iterator[int]:
            while rows := cur.fetchmany(FETCH):
                for (p,) in rows:
                    yield p

        _stage_keys(con, keys_at(positions()), spill)
        cur.close()
        con.execute("DROP TABLE lines")
        line_fp = "line_fp" if has_line_fp else "NULL::BIGINT"
        if history and _count(con, "SELECT count(*) FROM keyed WHERE k IS NOT NULL"):
            attach_read_only(con, path, _ALIAS, timeout=timeout)
            try:
                sql = _KNOWN.format(statuses=st, failed=failed, line_fp=line_fp)
                con.execute(sql, [job_name])
            finally:
                con.execute(f"DETACH {_ALIAS}")
        else:  # every line matched (or is blank): the history's keys need not be read at all
            con.execute(
                "CREATE TABLE known AS SELECT pos, k, false AS final, false AS failed, "
                "NULL::VARCHAR AS request_fp, NULL::BIGINT AS lfp FROM keyed"
            )
        con.execute("DROP TABLE keyed")
        con.execute(_ANSWERS)
        con.execute("DROP TABLE known")
        return ResumeLookup(con, path, source, lines=lines)
    except duckdb.Error as exc:
        _close(con, path)
        raise StoreError(f"{path}: resume lookup: {exc}") from exc
    except BaseException:
        _close(con, path)
        raise


def final_keys(
    con: duckdb.DuckDBPyConnection, job_name: str, statuses: Collection[RecordStatus]
) -> dict[str, str | None]:
    """record_key → request_fp for the job's results in `statuses` (one bulk query)."""
    if not statuses:
        return {}
    rows = con.execute(
        "SELECT record_key, request_fp FROM results "
        "WHERE job_name = ? AND list_contains(?::VARCHAR[], status)",
        [job_name, [str(s) for s in statuses]],
    ).fetchall()
    return dict(rows)
