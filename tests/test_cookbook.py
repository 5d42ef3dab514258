"""The README's SQL cookbook stays true: every query in it runs against a real run's database and
answers something (issue 13). The queries are read from README.md, not copied here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def cookbook() -> list[tuple[str, str]]:
    """(title, statement) for each statement of each ```sql block under '### SQL cookbook'."""
    section = README.split("### SQL cookbook", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    out = []
    for block in re.findall(r"```sql\n(.*?)```", section, flags=re.S):
        title = block.splitlines()[0].removeprefix("-- ").strip()
        body = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
        out += [(title, stmt.strip()) for stmt in body.split(";") if stmt.strip()]
    return out


QUERIES = cookbook()


def test_the_cookbook_has_the_queries_people_ask_for() -> None:
    titles = " / ".join(t for t, _ in QUERIES).lower()
    asked = ("last night's cost by tier", "by task", "ten most expensive records",
             "failure types this week", "fallback rate by model", "spend per day")  # fmt: skip
    for question in asked:
        assert question in titles, question
    assert len({t for t, _ in QUERIES}) >= 6


@pytest.fixture(scope="module")
def db(flaky_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flaky run's database, with an experiment split over two arms (the run has none)."""
    copy = tmp_path_factory.mktemp("cookbook") / "cook.duckdb"
    shutil.copy(flaky_db, copy)
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE results SET arm = CASE WHEN hash(record_key) % 2 = 0 "
                    "THEN 'control' ELSE 'learned' END")  # fmt: skip
    return copy


@pytest.mark.parametrize(("title", "sql"), QUERIES, ids=[t[:40] for t, _ in QUERIES])
def test_each_cookbook_query_runs_and_answers(db: Path, title: str, sql: str) -> None:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(sql).fetchall()
        cost = con.execute("SELECT sum(cost_usd) FROM attempts").fetchone()
    assert rows, title
    assert cost is not None
    if "spend per day" in title.lower() or "cost by tier" in title.lower():
        assert sum(r[-1] for r in rows) == cost[0]  # every call of the run is in the answer


def test_failure_types_count_a_record_once_per_job(db: Path, tmp_path: Path) -> None:
    """Two jobs may hold the same record key; `count(DISTINCT record_key)` counted the two
    records as one (the review of issue 13)."""
    (sql,) = [s for t, s in QUERIES if t.lower().startswith("failure types this week")]
    copy = tmp_path / "two-jobs.duckdb"
    shutil.copy(db, copy)
    with duckdb.connect(str(copy)) as con:
        # A second job whose records have the keys, results and failed calls of the first.
        con.execute("INSERT INTO results SELECT * REPLACE ('other' AS job_name) FROM results")
        con.execute("INSERT INTO attempts SELECT * REPLACE ('other' AS job_name) FROM attempts")
        con.execute("UPDATE attempts SET started_at = now() AT TIME ZONE 'UTC'")
        got = {r[0]: r[2] for r in con.execute(sql).fetchall()}
        want = dict(
            con.execute(
                "SELECT error_type, count(DISTINCT (job_name, record_key)) FROM attempts "
                "WHERE error_type IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
    assert want
    assert got == want
