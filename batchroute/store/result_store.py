"""ResultStore: the façade over the DuckDB file that the runner, quote, report and CLI use.

It never holds the file open between calls: every operation opens the file, works in one
transaction and closes it, so readers can get in between flushes. It reads no journal files.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from ..errors import StoreError
from ..types import (
    AttemptRow,
    BatchRow,
    CostFix,
    RecordStatus,
    ReservedAttempt,
    ResultRow,
    ResumeState,
    RunCounts,
    RunStatus,
)
from . import batches as _batches
from . import cache as _cache
from . import fixes as _fixes
from . import migrations
from . import ratios as _ratios
from . import resume as _resume
from . import runs as _runs
from . import segment as _segment
from .connect import KeptInstance, transaction
from .encode import bulk_write, dedupe, utc, write_results
from .fixes import GapState as Gaps
from .replay import write_missing
from .reports import ReportData, check_dimensions, query_report, spent
from .resume import ResumeLookup

FixesOf = Callable[[list[str]], list[CostFix]]  # a segment's cost-fix lines (JSON) as CostFix


class ResultStore:
    """The batchroute DuckDB file. Opens the file per operation; never holds it open.

    Args:
        path: the database file.
        write_timeout: seconds a write keeps retrying while another process has the file open.
        read_timeout: the same for read-only report queries (kept short: a report gives up
            with a clear StoreError rather than hang while a run flushes).
        clock: returns the current time (UTC); injectable for tests.
        keep_instance: keep one DuckDB instance and attach the file for each write (for a
            process that writes every few seconds: the writer process), instead of a new one.
        after_commit: with `keep_instance`, a test hook run between each COMMIT and its checkpoint.
        read_only: every operation opens the file read-only (the dry run: it writes nothing).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        write_timeout: float = 30.0,
        read_timeout: float = 3.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        keep_instance: bool = False,
        after_commit: Callable[[], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.path, self.read_only, self._clock = Path(path), read_only, clock
        self.write_timeout, self.read_timeout = write_timeout, read_timeout
        self._kept = KeptInstance(self.path, after_commit=after_commit) if keep_instance else None

    def _tx(self, *, read_only: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """Open, run one transaction, commit (or roll back) and close."""
        read_only = read_only or self.read_only  # (a read-only open checkpoints nothing)
        timeout = self.read_timeout if read_only else self.write_timeout
        if self._kept is not None and not read_only:
            return self._kept.transaction(timeout=timeout)
        return transaction(self.path, read_only=read_only, timeout=timeout)

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create the schema or bring it up to date; idempotent."""
        with self._tx() as con:
            migrations.migrate(con, self.path, lambda: utc(self._clock()))

    def schema_version(self) -> int:
        """The version recorded in the file (0 for an empty file)."""
        with self._tx(read_only=True) as con:
            return migrations.schema_version(con, self.path)

    # -- runs -----------------------------------------------------------------------------

    def start_run(
        self, run_id: str, job_name: str, job_path: str, started_at: datetime, version: str
    ) -> None:
        """Record a new run as 'running'."""
        with self._tx() as con:
            _runs.insert_run(con, run_id, job_name, job_path, started_at, version)

    def begin_run(
        self,
        run_id: str,
        job_name: str,
        job_path: str,
        started_at: datetime,
        version: str,
        *,
        migrate: bool,
    ) -> int:
        """`migrate` (if asked), `close_stale_runs` and `start_run` in one transaction: one
        commit and checkpoint at a run's start instead of three (issue 11). Returns how many
        stale runs were closed. Only call while holding the run lock."""
        with self._tx() as con:
            if migrate:
                migrations.migrate(con, self.path, lambda: utc(self._clock()))
            closed = _runs.close_stale(con)
            _runs.insert_run(con, run_id, job_name, job_path, started_at, version)
        return closed

    def finish_run(
        self, run_id: str, status: RunStatus, counts: RunCounts, finished_at: datetime
    ) -> None:
        """Record the end of a run with its counters and cost."""
        with self._tx() as con:
            _runs.finish(con, run_id, status, counts, finished_at)

    def end_run(
        self, run_id: str, status: RunStatus, counts: RunCounts, finished_at: datetime, job: str,
        learn_since: date | None = None, last: tuple[list[Path], FixesOf] | None = None,
    ) -> dict[str, int] | None:  # fmt: skip
        """`finish_run`, then `status_counts(job)`, in one transaction (the writer process's
        last, so that the run never opens the file again at its end: issue 11). With
        `learn_since`, the job's attempts booked at their reservation with no generation id
        are raised first to what their model is known to bill (`fixes.raise_unidentified`).
        `last` (segments, `write_segments`' `fixes_of`) go first in the same transaction (one
        commit and checkpoint at the run's end, not two); None: they need `write`, none made."""
        args, ended = (run_id, status, counts, finished_at, job, learn_since), []
        if last is None:
            with self._tx() as con:
                return _runs.end(con, *args)
        ok = self.write_segments(*last, then=lambda con: ended.append(_runs.end(con, *args)))
        return ended[0] if ok else None

    def close_stale_runs(self) -> int:
        """Mark runs left 'running' by a dead process as 'interrupted'; returns how many.

        Only call while holding the run lock (then no live run exists). The finish time
        becomes the last attempt's start and the cost the sum of the run's attempts.
        """
        with self._tx() as con:
            return _runs.close_stale(con)

    # -- resume and budget ----------------------------------------------------------------

    def final_keys(
        self, job_name: str, *, statuses: Collection[RecordStatus]
    ) -> dict[str, str | None]:
        """record_key → request_fp for this job's results in `statuses`: every key in memory, for
        small jobs and the benchmark's baseline; a run asks `resume_lookup` instead."""
        with self._tx() as con:
            return _resume.final_keys(con, job_name, statuses)

    def status_counts(self, job_name: str) -> dict[str, int]:
        """How many of this job's records are in each status, over all runs."""
        with self._tx() as con:
            return _runs.status_counts(con, job_name)

    def spent_on(self, day: date, *, job_name: str | None) -> Decimal:
        """Settled spend on that UTC day, from attempts (job_name None: whole database)."""
        with self._tx() as con:
            return spent(con, day, job_name)

    def resume_state(
        self,
        job_name: str,
        *,
        final_statuses: Collection[RecordStatus],
        day: date,
        scope: str | None,
        learn_since: date | None = None,
    ) -> ResumeState:
        """What a run starts from: the job's final count, the day's spend in `scope` (a job,
        None: the file), the cost ratios calls since `learn_since` taught (`store.ratios`),
        where pending records stopped climbing (`runs.climbed`)."""
        with self._tx() as con:
            sql = "SELECT count(*) FILTER (list_contains(?::VARCHAR[], status)), count(*) "
            sql += "FILTER (status = 'pending') FROM results WHERE job_name = ?"
            row = con.execute(sql, [[str(s) for s in final_statuses], job_name]).fetchone()
            batches = _batches.open_reserved(con, day, scope)  # spent until settled
            settled = spent(con, day, scope)  # the same transaction: one open, not two
            ratios, floors = _ratios.learnt(con, learn_since) if learn_since else ({}, {})
            # Records killed mid-escalation: scanned for only when some record is pending.
            climbed = _runs.climbed(con, job_name) if row and row[1] else {}
        final = int(row[0]) if row is not None else 0
        return ResumeState(final, settled + batches, ratios, floors, climbed)

    def resume_lookup(
        self,
        job_name: str,
        fps: Iterable[array[int]],
        keys_at: Callable[[Iterator[int]], Iterable[tuple[int, str | None]]],
        *,
        final_statuses: Collection[RecordStatus],
        source: str = "",
        match: bool = True,
        history: bool = True,
    ) -> ResumeLookup:
        """The answers of one pass over an input whose lines' fingerprints, in order, are
        `fps`; `keys_at` gives the keys of the lines that are not final and unchanged.

        Reads `fps` to the end now and joins them with the job's results in `final_statuses`
        (see `store/resume.py`); holds the file only during the joins, so the run may write
        while the lookup streams. Close it after the pass.
        """
        return _resume.resume_lookup(
            self.path,
            job_name,
            fps,
            keys_at,
            final_statuses,
            source=source,
            timeout=self.write_timeout,
            match=match,
            history=history,
        )

    def has_line_fps(self, job_name: str, *, final_statuses: Collection[RecordStatus]) -> bool:
        """Whether any of the job's final results keeps its line's fingerprint: if none does,
        a resume need not hash its input (`resume_lookup(match=False)`)."""
        with self._tx(read_only=self._kept is None) as con:  # a kept instance: no new one
            return _resume.has_line_fps(con, job_name, [str(s) for s in final_statuses])

    # -- writes ---------------------------------------------------------------------------

    def write(
        self,
        results: Sequence[ResultRow],
        attempts: Sequence[AttemptRow],
        fixes: Sequence[CostFix] = (),
    ) -> None:
        """Upsert results, insert attempts, then apply cost fixes, in one transaction.

        An existing result keeps accumulating cost_usd, attempts and escalations (each run
        writes a record at most once); every other column takes the new value. Fixes come
        last so that they find the attempts written in the same call.
        """
        if not results and not attempts and not fixes:
            return
        now = utc(self._clock())
        merged = dedupe(results)
        with self._tx() as con:
            if merged:
                write_results(con, merged, now)
            if attempts:
                bulk_write(con, "attempts", attempts, now)
            if fixes:
                _fixes.apply_fixes(con, fixes)

    def write_segments(
        self, paths: list[Path], fixes_of: FixesOf,
        then: Callable[[duckdb.DuckDBPyConnection], object] | None = None,
    ) -> bool:  # fmt: skip
        """`write` of closed journal segments, read by DuckDB itself (the writer process's path:
        no Python object per row; see `store/segment.py`), in one transaction. `fixes_of` turns
        the JSON of their cost-fix lines into CostFix. False, with nothing written, when they
        need `write` of their rows instead (a result key repeated, a line cut short). `then`
        runs last in the same transaction (`end_run`'s)."""
        now = utc(self._clock())
        return _segment.write_tried(self._tx, paths, now, fixes_of, _fixes.apply_fixes, then)

    # -- the Batch API lane (migration 8) ------------------------------------------------

    def save_batch(self, row: BatchRow, *, new: bool = False) -> None:
        """Insert (`new`) or update one `batches` row, committed before the caller goes on."""
        with self._tx() as con:
            (_batches.insert if new else _batches.update)(con, row)

    def collect_batch(
        self, row: BatchRow, results: Sequence[ResultRow], attempts: Sequence[AttemptRow]
    ) -> None:
        """A finished batch's rows and its `collected` status, in one transaction."""
        with self._tx() as con:
            _batches.collect(con, row, results, attempts, self._clock())

    def open_batches(self, job_name: str, *, others: bool = False) -> list[BatchRow]:
        """This job's batches whose records are not free yet (`others`: the other jobs')."""
        with self._tx(read_only=True) as con:
            return _batches.open_rows(con, job_name, others=others)

    def batches(self, job_name: str | None = None) -> list[BatchRow]:
        """Every `batches` row (of one job), oldest first."""
        with self._tx(read_only=True) as con:
            return _batches.all_rows(con, job_name)

    def once_marks(self, job_name: str) -> tuple[set[str], set[str]]:
        """Pending records owed their one resubmission after an expiry, and those for the
        synchronous chain (`batches.once_marks`)."""
        with self._tx(read_only=True) as con:
            return _batches.once_marks(con, job_name)

    def known_batch_ids(self) -> set[str]:
        """OpenRouter batch ids already claimed by a row."""
        with self._tx() as con:
            return _batches.known_ids(con)

    def replay(self, results: Sequence[ResultRow], attempts: Sequence[AttemptRow]) -> int:
        """Write the rows of a write-ahead log that the database does not hold yet, in one
        transaction; returns how many records were written.

        The rows come in log order, and may have been committed whole, in part or not at
        all: each row the database holds already is skipped (attempts by their identity,
        start time included; results by the last committed row of each key), so replaying
        the same rows twice changes nothing. If the write fails, nothing is written.
        """
        if not results and not attempts:
            return 0
        now = utc(self._clock())
        with self._tx() as con:
            return write_missing(con, results, attempts, now)

    def reserved_attempts(self, job_name: str, *, limit: int = 10_000) -> list[ReservedAttempt]:
        """`fixes.reserved_attempts`: what GET /generation may still correct, newest first."""
        with self._tx() as con:
            return _fixes.reserved_attempts(con, job_name, limit)

    def apply_fixes(self, fixes: Sequence[CostFix], gap: _fixes.GenerationGap | None = None) -> int:
        """Replace reservations with real costs (and remember `gap`); how many changed."""
        with self._tx() as con:  # (the caller skips this when it has neither)
            _fixes.remember_gap(con, gap)
            return _fixes.apply_fixes(con, fixes)

    def generation_gap(self, base_url: str, job: str, since: datetime, old: datetime) -> Gaps:
        """`fixes.generation_gap`: `base_url`'s proven lack of /generation, or ids to probe."""
        with self._tx() as con:
            return _fixes.generation_gap(con, base_url, job, since, old, _fixes.PROBES)

    def save_baseline(
        self, run_id: str, job_name: str, tier: str, model: str,
        prices: tuple[Decimal, Decimal, Decimal], at: datetime,
    ) -> None:  # fmt: skip
        """What the `savings` view prices every record of this run against: the first model of
        the job's top tier at catalogue prices (per prompt token, completion token, request)."""
        with self._tx() as con:
            con.execute(
                "INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, job_name, tier, model, *prices, utc(at)],
            )

    # -- catalog cache --------------------------------------------------------------------

    def save_catalog(self, raw: bytes, fetched_at: datetime, source: str) -> None:
        """Keep `raw` (a /models response body) as the only cached catalogue."""
        with self._tx() as con:
            _cache.save(con, raw, fetched_at, source)

    def load_catalog(self) -> tuple[bytes, datetime] | None:
        """The last cached catalogue and when it was fetched (aware UTC), if any."""
        with self._tx() as con:
            return _cache.load(con)

    # -- report ---------------------------------------------------------------------------

    def report(
        self, *, by: Sequence[str], since: datetime | None, job_name: str | None
    ) -> ReportData:
        """Spend, calls, tokens and outcomes grouped by `by` (subset of DIMENSIONS).

        Opens the file read-only, retrying briefly while a writer holds it.
        """
        dims = check_dimensions(by)
        now = self._clock()
        with self._tx(read_only=True) as con:
            version = migrations.schema_version(con, self.path)
        if version == 0:
            raise StoreError(f"{self.path} is not a batchroute database (no schema)")
        if version < migrations.SCHEMA_VERSION:  # the report reads views added since
            self.migrate()
        with self._tx(read_only=True) as con:
            return query_report(con, dims, since, job_name, now)
