"""Reconciliation writes: attempts still booked at their reservation, and their real costs.

SQL over an open connection; asking the provider for the bill is the runner's job, not this.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple

import duckdb

from ..types import CostFix, CostSource, ReservedAttempt, RunStatus
from ..usd import ceil_usd
from . import ratios as _ratios
from .columns import MONEY
from .encode import money


def reserved_attempts(
    con: duckdb.DuckDBPyConnection, job_name: str, limit: int
) -> list[ReservedAttempt]:
    """This job's attempts booked at their reservation, or priced from their tokens at /models
    prices (the serving endpoint may bill more, audit4), that have a generation id, newest
    first."""
    rows = con.execute(
        "SELECT run_id, job_name, record_key, attempt_no, generation_id, cost_usd "
        "FROM attempts WHERE job_name = ? AND cost_source IN (?, ?) "
        "AND generation_id IS NOT NULL ORDER BY started_at DESC LIMIT ?",
        [job_name, str(CostSource.RESERVED), str(CostSource.CATALOG), limit],
    ).fetchall()
    return [ReservedAttempt(r[0], r[1], r[2], int(r[3]), r[4], Decimal(r[5])) for r in rows]


def apply_fixes(con: duckdb.DuckDBPyConnection, fixes: Sequence[CostFix]) -> int:
    """Fix reserved or catalog-priced attempts (only while still so: a fix applies once), then
    make the affected records' cost the sum of their attempts again; returns how many changed.

    A fix hits only the row of its own generation id: (run, record, attempt_no) may be shared
    (a batch item and its round-2 resubmission are both attempt 0 of one run), and the other
    row's reservation stands for a bill /generation did not measure."""
    changed = 0
    recompute: set[tuple[str, str]] = set()
    runs: set[str] = set()
    for f in fixes:
        rows = con.execute(
            f"UPDATE attempts SET cost_usd = CAST(? AS {MONEY}), cost_source = ?, "
            f"usage_cost_usd = CAST(? AS {MONEY}), upstream_cost_usd = CAST(? AS {MONEY}), "
            "served_model = COALESCE(served_model, ?) "
            "WHERE run_id = ? AND job_name = ? AND record_key = ? AND attempt_no = ? "
            "AND cost_source IN (?, ?) AND generation_id = ? RETURNING 1",
            [
                money(f.cost_usd),
                f.cost_source,
                None if f.usage_cost_usd is None else money(f.usage_cost_usd),
                None if f.upstream_cost_usd is None else money(f.upstream_cost_usd),
                f.served_model,
                f.run_id,
                f.job_name,
                f.record_key,
                f.attempt_no,
                str(CostSource.RESERVED),
                str(CostSource.CATALOG),  # tokens at /models prices: the bill may differ
                f.generation_id,
            ],
        ).fetchall()
        changed += len(rows)
        if rows:
            runs.add(f.run_id)
        if rows and f.recompute_result:
            recompute.add((f.job_name, f.record_key))
    _resum(con, recompute, runs)
    return changed


def _resum(con: duckdb.DuckDBPyConnection, recompute: set[tuple[str, str]], runs: set[str]) -> None:
    """Make the records' cost, and the ended runs' cost, the sum of their attempts again."""
    for job_name, key in recompute:
        con.execute(
            "UPDATE results SET cost_usd = (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a "
            "WHERE a.job_name = results.job_name AND a.record_key = results.record_key) "
            "WHERE job_name = ? AND record_key = ?",
            [job_name, key],
        )
    resum_runs(con, runs)


def resum_runs(con: duckdb.DuckDBPyConnection, runs: set[str]) -> None:
    """Make the cost of those of `runs` that have ended the sum of their attempts again (a
    fix, or a replay step, that adds to or moves a run's attempts after its end)."""
    # A finished run's cost is the sum of its attempts: a fix that comes after its end (the
    # next run's reconciliation) moves it too. A run still going writes its cost at its end,
    # fixes included (`finish_run`): asked first, so that the writer process's fixes of its
    # own run sum no attempts.
    ended = (
        con.execute(
            "SELECT run_id FROM runs WHERE list_contains(?::VARCHAR[], run_id) AND status <> ?",
            [sorted(runs), str(RunStatus.RUNNING)],
        ).fetchall()
        if runs
        else []
    )
    for (run_id,) in ended:
        con.execute(
            "UPDATE runs SET cost_usd = (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a "
            "WHERE a.run_id = ?) WHERE run_id = ?",
            [run_id, run_id],
        )


_UNIDENTIFIED = (
    "SELECT run_id, record_key, attempt_no, model, cost_usd, COALESCE(listed_usd, reserved_usd) "
    "FROM attempts WHERE job_name = ? AND cost_source = ? AND generation_id IS NULL "
    "AND started_at >= ?"
)


def raise_unidentified(con: duckdb.DuckDBPyConnection, job_name: str, since: date) -> int:
    """Raise this job's attempts booked at their reservation with no generation id (a call
    killed in flight before its headers, a timeout before them: nothing can ever ask
    /generation about them) to what their model is now known to bill: the list-price worst
    case × the largest ratio the file's calls since `since` taught, or its $0-model floor
    (`store.ratios`). Since money3 a reservation is no upper bound of a bill above the list
    (audit4, `tests/test_audit4_killed_above.py`). Only ever up: an estimate that overcounts;
    the rows stay `reserved`. Returns how many changed."""
    start = datetime(since.year, since.month, since.day)
    rows = con.execute(_UNIDENTIFIED, [job_name, str(CostSource.RESERVED), start]).fetchall()
    if not rows:  # the rule, on every run's end: the ratios' scan only when there is work
        return 0
    above, free = _ratios.learnt(con, since)
    recompute: set[tuple[str, str]] = set()
    runs: set[str] = set()
    for run_id, key, attempt_no, model, cost, base in rows:
        known = [free.get(model, Decimal(0))]
        if base is not None and model in above:
            known.append(ceil_usd(Decimal(base) * above[model]))
        target = max(known)
        if target <= Decimal(cost):
            continue
        con.execute(
            f"UPDATE attempts SET cost_usd = CAST(? AS {MONEY}) WHERE run_id = ? AND "
            "job_name = ? AND record_key = ? AND attempt_no = ? AND cost_source = ? "
            "AND generation_id IS NULL",
            [money(target), run_id, job_name, key, attempt_no, str(CostSource.RESERVED)],
        )
        recompute.add((job_name, key))
        runs.add(run_id)
    _resum(con, recompute, runs)
    return len(recompute)


class GenerationGap(NamedTuple):
    """The proof that a base URL has no GET /generation: an id it gave, when that call
    started, the status a GET of it got, when (`generation_gaps`, migration 12)."""

    base_url: str
    proven_at: datetime
    generation_id: str
    generation_started_at: datetime
    http_status: int


GapState = tuple[GenerationGap | None, list[tuple[str, datetime]]]
PROBES = 3  # ids asked at once to prove a base URL has no /generation (all must say so)

_PROBES = (
    "SELECT generation_id, max(started_at) FROM attempts WHERE job_name = ? "
    "AND cost_source = ? AND generation_id IS NOT NULL AND started_at <= ? "
    "GROUP BY generation_id ORDER BY 2 DESC LIMIT ?"
)


def generation_gap(
    con: duckdb.DuckDBPyConnection, base_url: str, job_name: str, since: datetime,
    older_than: datetime, probes: int,
) -> GapState:  # fmt: skip
    """What is known of `base_url`'s /generation: its gap if proven on `since` or later; else
    up to `probes` of this job's unreconciled generation ids whose calls started before
    `older_than` (newest first), to probe with. A file before migration 12 knows none."""
    tables = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'generation_gaps'"
    ).fetchone()
    if not tables or not tables[0]:
        return None, []
    row = con.execute(
        "SELECT * FROM generation_gaps WHERE base_url = ? AND proven_at >= ?", [base_url, since]
    ).fetchone()
    if row is not None:
        return GenerationGap(*row), []
    # Only answered calls (priced from their tokens) are probes: their generations exist.
    # A reserved row's id may be a generation that never was (an error status, a call
    # killed or cut), which OpenRouter answers 404 for ever: three such would "prove" that
    # openrouter.ai has no /generation, and for 7 days no reserved or catalogue-priced row
    # would be corrected up to its bill (the stop-24 review).
    kind = str(CostSource.CATALOG)
    found = con.execute(_PROBES, [job_name, kind, older_than, probes]).fetchall()
    return None, [(str(g), at) for g, at in found]


def remember_gap(con: duckdb.DuckDBPyConnection, gap: GenerationGap | None) -> None:
    """Keep the proof that `gap.base_url` has no /generation (replacing an older one)."""
    if gap is not None:
        con.execute("INSERT OR REPLACE INTO generation_gaps VALUES (?, ?, ?, ?, ?)", list(gap))
