"""A run killed with -9 between the writer process's COMMIT and its checkpoint: the committed
rows are then in DuckDB's WAL (`<db>.wal`) only. Readers open the file read-only (`report`, any
SQL client) and the next run opens it read-write: neither may lose those rows, in either order.

Real processes and files: the CLI against the simulator, killed at that moment by the test hook
`BATCHROUTE_TEST_KILL_AT=writer-committed:N` (the writer SIGKILLs the run and itself after its
Nth commit; inert when unset). The killed commit's journal segments are deleted before the
readers come, as a writer that deletes a segment before checkpointing would leave them: the WAL
is then the only copy of those rows, and a WAL dropped by a reader would show as records
missing, sent again and billed twice, with their first bill missing from the database.
Measured on duckdb 2.0.1: nothing is lost (/work/wt/wal-findings.md, docs/design-notes.md).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from factories import texts, write_job, write_jsonl
from subprocs import job_endpoint, query, reaped, run_cli, simulator, spawn_run

from batchroute.journal import journal_files, journal_path, read_segment
from batchroute.types import RecordStatus

N = 2_000
CONCURRENCY = 64
LIMITS = {"concurrency": CONCURRENCY, "requests_per_minute": None, "timeout_s": 60}
REQUEST = {"max_tokens": 2048}  # no finish_length escalation: one billed call per record


def _wal(db: Path) -> Path:
    return db.with_name(db.name + ".wal")


def _done(db: Path) -> dict[str, str | None]:
    """Each done record's key and the generation id of its answered attempt, read-only."""
    rows = query(
        db,
        "SELECT r.record_key, a.generation_id FROM results r JOIN attempts a "
        "USING (job_name, record_key) WHERE r.status = 'done' AND a.outcome = 'ok'",
    )
    return dict(rows)


@pytest.mark.parametrize("first", ["read-only", "read-write"])
def test_rows_only_in_the_wal_of_a_killed_writer_survive_readers_and_the_rerun(
    tmp_path: Path, first: str
) -> None:
    with simulator("--latency-ms", "50") as sim:
        write_jsonl(tmp_path / "in.jsonl", texts(N))
        job = write_job(tmp_path, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
        db = tmp_path / "results.duckdb"
        env = {"BATCHROUTE_TEST_KILL_AT": "writer-committed:3"}
        with reaped(spawn_run(job, env=env)) as proc:
            proc.wait()
        assert proc.returncode == -9, "the writer's hook kills the run after its 3rd commit"

        # The killed commit's rows: in its journal segments (still on disk: today's writer
        # deletes a segment after the checkpoint) and in the WAL, not in the database file.
        wal_size = _wal(db).stat().st_size
        closed = [p for p in journal_files(journal_path(db)) if p != journal_path(db)]
        in_wal: dict[str, str | None] = {}
        for seg in closed:
            _, attempts, _ = read_segment(seg)
            in_wal.update((a.record_key, a.generation_id) for a in attempts if a.outcome == "ok")
        assert in_wal, "the killed commit held answered records"
        for seg in closed:
            seg.unlink()  # the WAL is now their only copy

        if first == "read-only":
            report = run_cli("report", str(db), "--by", "job", "--format", "json")
            assert report.returncode == 0, report.stderr
            assert json.loads(report.stdout)["rows"][0]["calls"] >= len(in_wal)
            seen = _done(db)  # a plain duckdb.connect(read_only=True), as any SQL client
            assert _wal(db).stat().st_size == wal_size, "a read-only open leaves the WAL as is"
            before = db.read_bytes()
            dry = run_cli("run", str(job), "--dry-run", "--json")
            assert dry.returncode == 0, dry.stderr
            # The dry run writes nothing: no checkpoint of the WAL into the file either.
            assert _wal(db).stat().st_size == wal_size
            assert db.read_bytes() == before
        else:
            duckdb.connect(str(db)).close()  # a SQL client opened read-write: a checkpoint
            assert not _wal(db).exists()
            seen = _done(db)
        assert {k: seen.get(k) for k in in_wal} == in_wal

        calls_before = sim.calls()
        rerun = run_cli("run", str(job))
        assert rerun.returncode == 0, rerun.stderr
        ledger = sim.ledger()

    if first == "read-only":  # the dry run counted what the run then sent
        sent = re.search(r"(\d+) to send", rerun.stderr)
        assert sent is not None, rerun.stderr
        assert json.loads(dry.stdout)["records"] == int(sent.group(1))

    assert calls_before < N + CONCURRENCY
    # Nothing the WAL held was sent again: only the calls in flight at the kill were.
    assert ledger["calls"] - N <= CONCURRENCY
    after = _done(db)
    assert {k: after.get(k) for k in in_wal} == in_wal
    again = query(
        db,
        "SELECT count(*) FROM attempts WHERE list_contains(?::VARCHAR[], record_key) "
        "AND outcome = 'ok'",
        [sorted(in_wal)],
    )
    assert again == [(len(in_wal),)]
    assert query(db, "SELECT status, count(*) FROM results GROUP BY ALL") == [
        (RecordStatus.DONE.value, N)
    ]
    billed = {g["id"] for g in ledger["generations"]}
    recorded = {g for (g,) in query(db, "SELECT generation_id FROM attempts") if g}
    assert len(billed - recorded) <= CONCURRENCY  # the killed calls, kept at their reservation
    (total,) = query(db, "SELECT sum(cost_usd) FROM attempts")[0]
    assert total >= Decimal(str(ledger["total_cost_usd"]))
