"""The dry run's expected cost counts the learnt ratios, as its worst case does (money4).

`seed` made the dry run's worst case use the learnt ratios, but its expected cost stayed at
list prices: after a provider billed ~2.8x its reservations, the quote said the job would
cost what the list says while every call was going to be reserved (and billed) at ~2.8x.
Now the expected figure is × the ratios in force (floors too), and the list-price figure is
shown beside it, labelled (`expected_list_usd`). The batch lane's worst case counts them too.

Real CLI in a subprocess against stand-ins on a loopback port, real DuckDB file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import yaml
from batch_standin import BatchStandIn
from subprocs import run_cli
from test_audit_cost_above import PricedAbove
from test_money4_batch_ratio import _job as batch_job
from test_money4_batch_ratio import _run as batch_run
from test_money4_ratio_lapse import CAP, _job, _run


def _copy(tmp_path: Path, job: Path) -> Path:
    """A copy of the job and its file that says no list price nor reservation: nothing
    learnt."""
    db = tmp_path / "results.duckdb"
    (tmp_path / "copy").mkdir()
    shutil.copy(db, tmp_path / "copy" / db.name)
    with duckdb.connect(str(tmp_path / "copy" / db.name)) as con:
        con.execute("UPDATE attempts SET reserved_usd = NULL, listed_usd = NULL")
    spec = yaml.safe_load(job.read_text())
    spec["output"]["database"] = str(tmp_path / "copy" / db.name)
    copy_job = tmp_path / "copy" / "job.yaml"
    copy_job.write_text(yaml.safe_dump(spec, sort_keys=False))
    return copy_job


async def _quotes(tmp_path: Path, job: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The dry run's JSON on `_copy`'s file, on the file itself, and its text."""
    copy_job = await asyncio.to_thread(_copy, tmp_path, job)
    quotes = []
    for path in (copy_job, job):
        out = await asyncio.to_thread(run_cli, "run", str(path), "--dry-run", "--json")
        assert out.returncode == 0, out.stderr
        quotes.append(json.loads(out.stdout))
    text = await asyncio.to_thread(run_cli, "run", str(job), "--dry-run")
    return quotes[0], quotes[1], text.stdout


async def test_the_expected_cost_counts_the_learnt_ratio(tmp_path: Path, serve: Any) -> None:
    """Before: the same expected cost with the ratio learnt as without (list prices). After:
    ~2.8x it, the list-price figure beside it, labelled."""
    standin = PricedAbove("ok", generation_known=False)
    job = _job(tmp_path, await serve(standin), CAP)
    await _run(job)  # learns x2.8 and stops at the cap
    plain, seeded, text = await _quotes(tmp_path, job)
    assert plain["records"] == seeded["records"] > 0
    listed, learnt = Decimal(plain["expected_usd"]), Decimal(seeded["expected_usd"])
    assert learnt >= listed * 2, (learnt, listed)
    assert Decimal(seeded["expected_list_usd"]) == listed == Decimal(plain["expected_list_usd"])
    assert "learnt cost ratios" in seeded["expected_includes"]
    assert "at list prices" in text, text


async def test_a_batch_tiers_quote_counts_the_batch_ratio(tmp_path: Path, serve: Any) -> None:
    """After a batch billed ~3.8x its reservation, the dry run's expected and worst case for
    the batch tier count that ratio (the lane reserves at it)."""
    standin = BatchStandIn(item_factor=Decimal(4), completion_tokens=256)
    job = batch_job(tmp_path, await serve(standin), Decimal("0.01"))
    await batch_run(job)
    plain, seeded, _ = await _quotes(tmp_path, job)
    assert plain["records"] == seeded["records"] > 0
    assert Decimal(seeded["worst_usd"]) >= 2 * Decimal(plain["worst_usd"]), (seeded, plain)
    assert Decimal(seeded["expected_usd"]) >= 2 * Decimal(plain["expected_usd"]), (seeded, plain)
