"""The real `batchroute` CLI in a subprocess: exit codes, messages and the rows it leaves.

Every run writes its DuckDB file under tmp_path (`--db`), so the repository stays clean, and
the environment never carries an API key unless a test puts one there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from factories import texts, write_job, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
TRANSLATE = ROOT / "jobs" / "translate.yaml"
MIXED = ROOT / "jobs" / "mixed.yaml"
LEDGER = re.compile(r"simulator ledger: (\d+) billed calls, \$([0-9.]+)")


@dataclass
class Done:
    code: int
    out: str
    err: str


def batchroute(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Done:
    environ = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    environ.update(env or {})
    p = subprocess.run(
        [sys.executable, "-m", "batchroute", *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return Done(p.returncode, p.stdout, p.stderr)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def ledger_total(err: str) -> tuple[int, Decimal]:
    m = LEDGER.search(err)
    assert m, err
    return int(m.group(1)), Decimal(m.group(2))


@pytest.fixture(scope="module")
def translate_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Done, Path]:
    """`batchroute run jobs/translate.yaml --simulate` once for the module (it takes seconds)."""
    tmp = tmp_path_factory.mktemp("translate")
    db = tmp / "x.duckdb"
    return batchroute("run", TRANSLATE, "--simulate", "--db", db, cwd=tmp), db


# --- run --simulate ----------------------------------------------------------------------------


def test_translate_simulated_exits_0_with_a_done_row_per_record(
    translate_run: tuple[Done, Path],
) -> None:
    done, db = translate_run
    assert done.code == 0, done.err
    lines = (ROOT / "sample_data" / "translate.jsonl").read_text(encoding="utf-8").splitlines()
    n = sum(1 for line in lines if line.strip())
    assert n >= 200
    assert query(db, "SELECT status, count(*) FROM results GROUP BY status") == [("done", n)]
    assert query(db, "SELECT count(*) FROM results WHERE cost_usd <= 0") == [(0,)]
    assert f"{n} done, 0 failed, 0 invalid, 0 pending" in done.out


def test_translate_simulated_cost_equals_the_simulator_ledger(
    translate_run: tuple[Done, Path],
) -> None:
    done, db = translate_run
    calls, total = ledger_total(done.err)
    ((db_total, db_calls),) = query(db, "SELECT sum(cost_usd), count(*) FROM attempts")
    assert (db_total, db_calls) == (total, calls)
    assert query(db, "SELECT sum(cost_usd) FROM results") == [(total,)]
    assert query(db, "SELECT cost_usd, status FROM runs") == [(total, "completed")]
    assert total > 0


def test_mixed_spreads_records_over_tiers_and_models(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    done = batchroute("run", MIXED, "--simulate", "--db", db, "--limit", "60", cwd=tmp_path)
    assert done.code == 0, done.err
    ((tiers, models, n),) = query(
        db,
        "SELECT count(DISTINCT tier), count(DISTINCT model_served), count(*) "
        "FROM results WHERE status = 'done'",
    )
    assert n == 60
    assert tiers >= 3
    assert models >= 3
    task_types = query(db, "SELECT count(DISTINCT task_type) FROM results")[0][0]
    assert task_types >= 3  # the classifier decided; the file has no task labels


def test_limit_processes_at_most_n_new_records_and_resume_continues(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(10))
    job = write_job(tmp_path)
    db = tmp_path / "l.duckdb"
    first = batchroute("run", job, "--simulate", "--db", db, "--limit", "3", cwd=tmp_path)
    assert first.code == 0, first.err
    assert query(db, "SELECT count(*) FROM results") == [(3,)]
    second = batchroute("run", job, "--simulate", "--db", db, "--limit", "3", cwd=tmp_path)
    assert second.code == 0, second.err
    assert query(db, "SELECT count(*), count(DISTINCT run_id) FROM results") == [(6, 2)]
    assert "3 already final" in second.out


def test_exit_4_when_some_records_are_invalid(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", [*texts(3), "not json", {"id": "x", "text": "no lang"}])
    job = write_job(tmp_path)
    db = tmp_path / "i.duckdb"
    done = batchroute("run", job, "--simulate", "--db", db, cwd=tmp_path)
    assert done.code == 4, done.err
    assert query(db, "SELECT status, count(*) FROM results GROUP BY status ORDER BY 1") == [
        ("done", 3),
        ("invalid", 2),
    ]


def test_exit_4_when_some_records_failed(tmp_path: Path) -> None:
    scenario = tmp_path / "down.json"
    scenario.write_text(json.dumps({"script": {"*": ["404"] * 8}}))
    write_jsonl(tmp_path / "in.jsonl", texts(3))
    job = write_job(tmp_path, limits={"concurrency": 1, "max_escalations": 0})
    db = tmp_path / "f.duckdb"
    done = batchroute("run", job, "--simulate", "--scenario", scenario, "--db", db, cwd=tmp_path)
    assert done.code == 4, done.err
    statuses = dict(query(db, "SELECT status, count(*) FROM results GROUP BY status"))
    assert statuses.get("failed", 0) >= 1
    assert query(db, "SELECT count(*) FROM results WHERE status='failed' AND error_type IS NULL")[
        0
    ] == (0,)


def test_401_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    scenario = tmp_path / "401.json"
    scenario.write_text(json.dumps({"script": {"*": ["401"] * 100}}))
    db = tmp_path / "a.duckdb"
    done = batchroute(
        "run", TRANSLATE, "--simulate", "--scenario", scenario, "--db", db, cwd=tmp_path
    )
    assert done.code == 2, done.err
    assert "401" in done.err
    assert "API key" in done.err
    assert "Traceback" not in done.err
    assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(0,)]


# --- run without calls / bad input -------------------------------------------------------------


def test_missing_api_key_exits_2_and_suggests_simulate(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    done = batchroute("run", TRANSLATE, "--db", db, cwd=tmp_path)
    assert done.code == 2
    assert "OPENROUTER_API_KEY" in done.err
    assert "--simulate" in done.err
    assert "Traceback" not in done.err
    assert not db.exists()


def test_misspelt_job_key_exits_2_naming_the_key_path(tmp_path: Path) -> None:
    text = TRANSLATE.read_text(encoding="utf-8").replace("max_attempts:", "max_attemps:")
    text = text.replace("../sample_data/", f"{ROOT}/sample_data/")
    job = tmp_path / "typo.yaml"
    job.write_text(text, encoding="utf-8")
    for cmd in (["validate", job], ["run", job, "--simulate", "--db", tmp_path / "t.duckdb"]):
        done = batchroute(*cmd, cwd=tmp_path)
        assert done.code == 2, done.err
        assert "limits.max_attemps" in done.err
        assert "typo.yaml" in done.err
        assert "Traceback" not in done.err


def test_report_on_a_missing_file_exits_2(tmp_path: Path) -> None:
    done = batchroute("report", tmp_path / "nope.duckdb", cwd=tmp_path)
    assert done.code == 2
    assert "nope.duckdb" in done.err
    assert "Traceback" not in done.err


def test_report_reads_the_run(translate_run: tuple[Done, Path], tmp_path: Path) -> None:
    _, db = translate_run
    done = batchroute("report", db, "--by", "tier,model", "--format", "json", cwd=tmp_path)
    assert done.code == 0, done.err
    assert "openai/gpt-4o-mini" in done.out


@pytest.mark.parametrize("as_json", [False, True])
def test_dry_run_prints_a_quote_and_makes_no_calls(tmp_path: Path, as_json: bool) -> None:
    db = tmp_path / "d.duckdb"
    args = ["run", TRANSLATE, "--dry-run", "--db", db] + (["--json"] if as_json else [])
    done = batchroute(*args, cwd=tmp_path)  # no key, no --simulate: nothing may be sent
    assert done.code == 0, done.err
    n = len((ROOT / "sample_data" / "translate.jsonl").read_text().splitlines())
    if as_json:
        q = json.loads(done.out)
        assert q["records"] == n
        mid = next(t for t in q["tiers"] if t["tier"] == "mid")
        assert mid["records"] == n
        assert Decimal(mid["worst_usd"]) >= Decimal(mid["expected_usd"]) > 0
    else:
        assert "mid" in done.out
        assert str(n) in done.out
        assert "worst" in done.out
    assert not db.exists()  # no DB rows written: no database at all


def test_dry_run_on_an_existing_database_writes_no_rows(
    translate_run: tuple[Done, Path], tmp_path: Path
) -> None:
    _, db = translate_run
    before = query(db, "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM runs)")
    done = batchroute("run", TRANSLATE, "--dry-run", "--json", "--db", db, cwd=tmp_path)
    assert done.code == 0, done.err
    assert json.loads(done.out)["skipped_already_final"] == before[0][0]
    assert query(db, "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM runs)") == (
        before
    )


# --- validate ----------------------------------------------------------------------------------


def test_validate_prints_the_plan(tmp_path: Path) -> None:
    done = batchroute("validate", TRANSLATE, cwd=tmp_path)
    assert done.code == 0, done.err
    assert "tier mid: openai/gpt-4o-mini → google/gemini-2.0-flash-001" in done.out
    assert "warning" not in done.out


def test_validate_warns_about_an_unknown_model_id(tmp_path: Path) -> None:
    text = TRANSLATE.read_text(encoding="utf-8").replace(
        "[openai/gpt-4o-mini,", "[anthropic/claude-3.5-sonnet,"
    )
    text = text.replace("../sample_data/", f"{ROOT}/sample_data/")  # else: no input, a warning
    job = tmp_path / "retired.yaml"
    job.write_text(text, encoding="utf-8")
    done = batchroute("validate", job, cwd=tmp_path)
    assert done.code == 0, done.err
    warning = [line for line in done.out.splitlines() if "warning" in line]
    assert len(warning) == 1
    assert "anthropic/claude-3.5-sonnet" in warning[0]


@pytest.mark.parametrize(
    ("escalate_on", "max_escalations", "says", "never_says"),
    [
        (None, 1, "escalation: up to 1 tier(s) on quality failures only", "when a chain is"),
        (["quality", "unavailable"], 2, "on quality failures and when a chain is unavailable",
         "failures only"),
        (["quality", "unavailable"], 0, "escalation: never (limits.max_escalations is 0)",
         "quality failures"),
        (["unavailable"], 1, "only when a chain is unavailable", "on quality failures"),
        ([], 1, "escalation: never (escalate_on is empty)", "quality failures"),
    ],
)  # fmt: skip
def test_validate_says_which_escalation_policy_applies(
    tmp_path: Path,
    escalate_on: list[str] | None,
    max_escalations: int,
    says: str,
    never_says: str,
) -> None:
    """An outage climbs to a dearer tier only when the job opts in: validate says which."""
    write_jsonl(tmp_path / "in.jsonl", texts(1))
    extra: dict[str, Any] = {"limits": {"max_escalations": max_escalations}}
    if escalate_on is not None:
        extra["escalate_on"] = escalate_on
    done = batchroute("validate", write_job(tmp_path, **extra), cwd=tmp_path)
    assert done.code == 0, done.err
    (line,) = [ln for ln in done.out.splitlines() if ln.startswith("escalation:")]
    assert says in line
    assert never_says not in line
