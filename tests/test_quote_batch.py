"""The dry run's figures for a `batch: true` tier, through the real CLI in a subprocess.

Expected: what the batch lane is really billed. The lane submits the catalogue's `:batch`
variant when /models lists one (at its listed price), else the base id, which OpenRouter bills
at "typically 50 %" of the standard price (batch-api.md §"Pricing"; the simulator's default
`batch_price_ratio`). Before, the expected column priced batch tiers at the full synchronous
price. The worst case stays an upper bound of what the run may be billed: a record's batch item
may be billed twice (an expired batch's item that ran but shows no result line is resubmitted
once) and then its synchronous chain.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import run_cli

from batchroute.plan import Overrides, build_plan
from batchroute.quote import offline_catalog
from batchroute.spec import load_spec
from batchroute.types import ResumeState

MODEL = "openai/gpt-4o-mini"
N = 12
QUANTUM = Decimal("1e-12")


def _job(tmp_path: Path, name: str, *, batch: bool) -> Path:
    job = job_dict(tmp_path, quality=[], output={"database": str(tmp_path / "x.duckdb")})
    job["tiers"] = {"mid": {"models": [MODEL], "batch": batch}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _dry(job: Path, db: Path) -> dict[str, Any]:
    p = run_cli("run", str(job), "--dry-run", "--json", "--db", str(db))
    assert p.returncode == 0, p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def _mid(doc: dict[str, Any]) -> tuple[Decimal, Decimal]:
    (t,) = [t for t in doc["tiers"] if t["tier"] == "mid"]
    return Decimal(t["expected_usd"]), Decimal(t["worst_usd"])


def test_without_a_listed_batch_variant_the_expected_cost_is_half_the_sync_price(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    db = tmp_path / "none.duckdb"  # no run yet: the shipped catalogue, no `:batch` entries
    sync_expected, sync_worst = _mid(_dry(_job(tmp_path, "s", batch=False), db))
    doc = _dry(_job(tmp_path, "b", batch=True), db)
    expected, worst = _mid(doc)
    assert abs(expected - sync_expected / 2) <= N * QUANTUM, (expected, sync_expected)
    assert worst > sync_worst  # the batch items come on top of the synchronous chain
    assert "batch" in doc["expected_includes"]


def test_a_listed_batch_variant_s_price_is_the_expected_one_and_the_run_pays_about_it(
    tmp_path: Path,
) -> None:
    """A run against the simulator listing `gpt-4o-mini:batch` at 40 % caches that catalogue;
    the dry run for the rest of the input then prices the batch tier at 40 %, and the run
    that follows is billed within the quote (expected ≈ bill; bill ≤ worst case)."""
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"batch_listed_models": [MODEL], "batch_price_ratio": 0.4}))
    db = tmp_path / "x.duckdb"
    batch, sync = _job(tmp_path, "b", batch=True), _job(tmp_path, "s", batch=False)
    first = run_cli("run", str(batch), "--simulate", "--scenario", str(scenario), "--db",
                    str(db), "--wait", "--limit", "2")  # fmt: skip
    assert first.returncode == 0, first.stderr
    sync_expected, _ = _mid(_dry(sync, db))
    expected, worst = _mid(_dry(batch, db))
    assert abs(expected - sync_expected * Decimal("0.4")) <= N * QUANTUM, (expected, sync_expected)
    # what that quote is for: the rest of the run, billed by the simulator at 40 %
    spec = load_spec(batch)
    plan = build_plan(spec, offline_catalog(db), ResumeState(), Overrides())
    assert ":batch" in str(plan.catalog.raw)
    rest = run_cli("run", str(batch), "--simulate", "--scenario", str(scenario), "--db",
                   str(db), "--wait")  # fmt: skip
    assert rest.returncode == 0, rest.stderr
    billed = _spent_after_the_first_two(db, spec.name)
    assert billed <= worst
    assert billed <= expected  # the typical answer (256 tokens) is longer than the simulator's
    assert billed >= expected / 10, (billed, expected)


def _spent_after_the_first_two(db: Path, job: str) -> Decimal:
    from subprocs import query

    runs = query(db, "SELECT run_id FROM runs WHERE job_name = ? ORDER BY started_at", [job])
    assert len(runs) == 2
    ((total,),) = query(db, "SELECT SUM(cost_usd) FROM attempts WHERE run_id = ?", [runs[1][0]])
    return Decimal(total)
