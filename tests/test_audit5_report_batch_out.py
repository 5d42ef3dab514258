"""`report` says less than the bill while a batch is out (audit5).

A submitted batch cannot be cancelled (batch-api.md §6): its spend is committed at the POST,
and the provider bills it when it runs, whether or not a run has collected it yet. The run
counts it: its reservation is in today's spend (`store.batches.open_reserved`, "committed
spend ... counted against the day until its items' attempts carry the bill"), and the run's
first line says so. `batchroute report` sums `attempts` only: until the job's next run collects
the batch, its "spent today" and its TOTAL leave the batch out, below what the provider has
billed, and below what the next run will count against the cap.

Now `report` counts such a batch today at its reservation, as the run's start does, and says
how much of today's spend it is.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from batch_standin import MODEL, BatchStandIn
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli, run_cli_async

N = 12


def _job(tmp_path: Path, url: str) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(
        tmp_path, quality=[], endpoint={"base_url": url, "api_key_env": KEY_ENV},
        budget={"daily_usd": 10},
    )  # fmt: skip
    job["tiers"] = {"mid": {"models": [MODEL], "batch": True}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


async def batch_out_and_billed(tmp_path: Path, serve: Any) -> tuple[BatchStandIn, Path]:
    """The night both tests start from: the run submits its batch and ends (exit 7, the batch
    out); then the batch runs at the provider, billed. The stand-in and the job file."""
    standin = BatchStandIn(polls_to_finish=1_000_000)
    job = _job(tmp_path, await serve(standin))
    code, err = await run_cli_async("run", str(job))
    assert code == 7, err  # the batch is out
    (bid,) = standin.batches
    assert standin._finish(bid) == "completed"  # it runs at the provider: billed now
    return standin, job


async def test_report_counts_a_batch_still_out_today(tmp_path: Path, serve: Any) -> None:
    """Before (b5d2829): see the assertion's message (report $0.00 against the bill)."""
    standin, _ = await batch_out_and_billed(tmp_path, serve)
    billed = standin.total
    assert billed > 0
    db = tmp_path / "results.duckdb"
    ((reserved,),) = query(db, "SELECT reserved_usd FROM batches")
    proc = run_cli("report", str(db), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    today = Decimal(json.loads(proc.stdout)["today"]["cost_usd"])
    assert today >= billed, (
        f"report: spent today ${today}; the provider billed ${billed} for the batch "
        f"out (reserved ${reserved}, counted by the next run's start)"
    )
    text = run_cli("report", str(db)).stdout
    assert "reserved by batches still out" in text, text
