"""The bad-night soak (issue 9): chaos, a reader holding the file, a kill -9, reruns.

Shared by `tests/test_soak.py` (small, in CI) and `tests/bench/bench_soak.py` (10,000 records).
Real processes only: the simulator and every run are `batchroute` subprocesses, the reader is
a Python child opening the DuckDB file every few seconds, the kill is SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import ENV, KEY_ENV, query, reaped, run_cli, simulator, spawn_run, wait_until

READER = """
import sys, time, duckdb
path, stop = sys.argv[1], sys.argv[2]
import os
opened = 0
while not os.path.exists(stop):
    try:
        con = duckdb.connect(path, read_only=True)
        con.execute("SELECT count(*) FROM results").fetchall()
        time.sleep(0.3)  # a BI tool reading for a moment
        con.close()
        opened += 1
    except Exception:
        pass
    time.sleep(1.5)
print(opened, flush=True)
"""


@dataclass
class SoakResult:
    records: int
    exit_codes: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    db_usd: Decimal = Decimal(0)
    ledger_usd: Decimal = Decimal(0)
    reserved_usd: Decimal = Decimal(0)
    unlogged_answers: int = 0  # billed, delivered answers whose generation id no row holds
    reader_opens: int = 0
    tracebacks: int = 0
    untyped_failures: int = 0


def run_soak(tmp_path: Path, n: int, *, concurrency: int, kill_after_calls: int) -> SoakResult:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    out = SoakResult(n)
    chaos_file = tmp_path / "chaos.yaml"
    chaos_file.write_text(
        yaml.safe_dump(
            {
                "rate_429": 0.02,
                "rate_502": 0.02,
                "rate_503": 0.02,
                "rate_200_error": 0.02,
                "rate_choice_error": 0.02,
                "rate_empty": 0.02,
                "rate_malformed": 0.02,
                "rate_reset": 0.02,
                "rate_hang": 0.002,
                "hang_s": 1.0,
                "retry_after_s": 0.01,
                "generation_delay_s": 0,
                "latency_ms": 20,
            }
        )
    )
    with simulator("--scenario", str(chaos_file)) as sim:
        job = job_dict(
            tmp_path,
            tiers={
                "mid": ["openai/gpt-4o-mini", "google/gemini-2.0-flash-001"],
                "standard": ["openai/gpt-4o"],
            },
            limits={
                "concurrency": concurrency,
                "timeout_s": 0.5,
                "backoff_base_s": 0.01,
                "backoff_max_s": 0.1,
                "reconcile_wait_s": 5,
            },
            quality=["empty"],
            endpoint={"base_url": sim.base_url, "api_key_env": KEY_ENV},
        )
        job_path = tmp_path / "job.yaml"
        job_path.write_text(yaml.safe_dump(job, sort_keys=False))
        db = tmp_path / "results.duckdb"
        stop = tmp_path / "reader.stop"
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(db), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        with reaped(reader):
            with reaped(spawn_run(job_path)) as first:
                wait_until(lambda: sim.calls() >= kill_after_calls, "calls before the kill")
                os.kill(first.pid, signal.SIGKILL)
                stdout, stderr = first.communicate(timeout=60)
                out.tracebacks += "Traceback" in stdout + stderr
            for _ in range(4):  # reruns until nothing is left pending
                r = run_cli("run", str(job_path), timeout=600)
                out.exit_codes.append(r.returncode)
                out.tracebacks += "Traceback" in r.stdout + r.stderr
                if r.returncode in (0, 4):
                    break
            stop.touch()
            reader_out, _ = reader.communicate(timeout=60)
            out.reader_opens = int(reader_out.strip() or 0)
        ledger: dict[str, Any] = sim.ledger()
    out.statuses = dict(query(db, "SELECT status, count(*) FROM results GROUP BY 1"))
    out.untyped_failures = query(
        db, "SELECT count(*) FROM results WHERE status <> 'done' AND error_type IS NULL"
    )[0][0]
    out.db_usd = Decimal(query(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts")[0][0])
    out.reserved_usd = Decimal(
        query(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE cost_source = 'reserved'")[
            0
        ][0]
    )
    out.ledger_usd = Decimal(ledger["total_cost_usd"])
    logged = {g for (g,) in query(db, "SELECT generation_id FROM attempts") if g}
    out.unlogged_answers = sum(
        1 for g in ledger["generations"] if g["delivered"] and g["id"] not in logged
    )
    return out
