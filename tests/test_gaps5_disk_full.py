"""A disk-full night on a job's first run: the next run leaves the database whole (gaps5).

On a job's first run the writer process makes the database beside its place
(`results.duckdb.new`) and renames it over the empty placeholder once its start writes are
in. When the disk is full before that, the run dies with no database, no `runs` row, and
the `.new` left behind; its paid calls are in the journal. The next run replays the journal
(the money reaches `attempts`, audit4), but run 1 never got a `runs` row: `runs` and
`run_summary` said less than `attempts` by run 1's spend, and the stale `.new` (and its
`.wal`) stayed beside the database for good.

Real parts: the real CLI in subprocesses, a stand-in on a loopback port, a real DuckDB file on
a real 32 MiB tmpfs in a private mount namespace (`test_audit4_disk_full`'s night).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from subprocs import query
from test_audit4_disk_full import N, night, pytestmark  # noqa: F401 (needs root and unshare)


async def test_the_failed_first_run_gets_its_runs_row_and_no_new_file_is_left(
    tmp_path: Path, serve: Any
) -> None:
    """Before: after run 2, `runs` held run 2 alone ($0.0402) while `attempts` held $0.0577
    (run 1's 12 calls, $0.0175, under a run id no `runs` row had), and `results.duckdb.new`
    and its `.wal` were still there. After: run 1 has an `interrupted` row costing the sum of
    its attempts, every run's cost is its attempts' sum, and no `.new` is left."""
    standin, host, rc1, rc2 = await night(tmp_path, serve)
    assert rc1 != "0", (host / "out1").read_text()  # the night did fail
    assert rc2 == "0", (host / "out2").read_text()
    db = host / "out" / "results.duckdb"
    assert sorted(p.name for p in (host / "out").iterdir() if ".new" in p.name) == []
    assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(N,)]
    orphans = query(db, "SELECT DISTINCT run_id FROM attempts ANTI JOIN runs USING (run_id)")
    assert orphans == [], orphans
    runs = query(db, "SELECT status, cost_usd, attempts_cost_usd FROM run_summary ORDER BY 1")
    assert [r[0] for r in runs] == ["completed", "interrupted"], runs
    assert all(r[1] == r[2] for r in runs), runs
    booked = query(db, "SELECT sum(cost_usd) FROM runs")[0][0]
    assert booked >= standin.total, (booked, standin.total)
    # Paid twice only where the full disk lost a paid answer (replayed `killed`: its record
    # had to be asked again), never a record whose answer the journal held.
    killed = query(db, "SELECT count(*) FROM attempts WHERE outcome = 'killed'")[0][0]
    assert len(standin.billed) == N + killed, (len(standin.billed), killed)
