"""`report --html FILE` wrote its page over a database (audit6).

`report results.duckdb --html results.duckdb` (a slip of the shell's history, or a tab
completion one letter short) replaced the job's database, every result and every attempt's
cost, with an HTML page: the next run found "not a DuckDB database", and a run given a new
file paid for every record again. So did `--html` naming another job's database. Nothing
asked: the page was written with `Path.write_text`.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from factories import standin_job, texts
from subprocs import query, run_cli_async
from test_billing_standin import MODEL, StandIn


async def test_report_html_never_writes_over_a_database(tmp_path: Path, serve: Any) -> None:
    """Before (4fb9e65): exit 0, "wrote the HTML report to …/results.duckdb"; the file is
    HTML and its 3 results are gone (and the same for another job's database)."""
    standin = StandIn("ok")
    path = standin_job(tmp_path, await serve(standin), model=MODEL, cap=10, records=texts(3))
    code, err = await run_cli_async("run", str(path))
    assert code == 0, err
    db = tmp_path / "results.duckdb"
    other = tmp_path / "other.duckdb"
    shutil.copy(db, other)
    for target in (db, other):
        code, err = await run_cli_async("report", str(db), "--html", str(target))
        assert code == 2, err
        assert str(target) in err
        assert query(target, "SELECT count(*) FROM results WHERE status = 'done'") == [(3,)]
    # Nor over the job's input or job file (the review: only DuckDB files were guarded)
    for target in (tmp_path / "in.jsonl", path):
        before = target.read_bytes()
        code, err = await run_cli_async("report", str(db), "--html", str(target))
        assert code == 2, err
        assert target.read_bytes() == before
    page = tmp_path / "report.html"  # an ordinary page is still written, and written again
    for _ in range(2):
        code, err = await run_cli_async("report", str(db), "--html", str(page))
        assert code == 0, err
        assert page.read_text().lstrip().lower().startswith("<!doctype html")
