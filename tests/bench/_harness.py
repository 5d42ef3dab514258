"""Shared helpers for the runner benchmarks (on demand, not collected by pytest).

The simulator always runs in its own process (`python -m batchroute simulate`), so client and
server never share an event loop; inputs, job files and databases live in a temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `tests.factories` without installing the tests

from tests.factories import job_dict  # noqa: E402

PY = sys.executable
MODEL = "openai/gpt-4o-mini"  # the `mid` tier's first model: task translation routes there


class Sim:
    """A running simulator process: its base URL and CPU seconds used so far."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_self_s() -> float:
    t = os.times()
    return t.user + t.system


def cpu_children_s() -> float:
    """CPU of this process's children once reaped: batchroute's writer process (issue 11)."""
    t = os.times()
    return t.children_user + t.children_system


def peak_rss_children_kib() -> int:
    """The largest peak RSS among this process's reaped children (the writer process)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


@contextlib.contextmanager
def simulator(
    *, latency_ms: float = 0, scenario: dict[str, Any] | None = None, tmp: Path | None = None
) -> Iterator[Sim]:
    """A simulator process on a free loopback port."""
    args = [PY, "-m", "batchroute", "simulate", "--port", "0", "--latency-ms", str(latency_ms)]
    if scenario:
        assert tmp is not None
        path = tmp / f"scenario-{os.getpid()}-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(scenario))
        args += ["--scenario", str(path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"simulator did not start: {url!r}")
        yield Sim(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def records(n: int) -> Iterator[dict[str, Any]]:
    """Same shape as tests.factories.texts, streamed (200k records need no list)."""
    langs = ["French", "German", "Spanish", "Japanese"]
    for i in range(n):
        yield {
            "id": f"r{i:07d}",
            "text": f"Sentence number {i} to translate. " * (1 + i % 4),
            "target_lang": langs[i % 4],
        }


def write_input(path: Path, n: int) -> Path:
    with path.open("wb") as fh:
        for r in records(n):
            fh.write(json.dumps(r).encode() + b"\n")
    return path


def write_job(tmp: Path, n: int, *, name: str = "bench", **limits: Any) -> Path:
    """Job file + input of n records in `tmp`; limits override the factory's defaults."""
    import yaml

    write_input(tmp / "in.jsonl", n)
    job = job_dict(tmp, name=name, limits=limits, budget={"daily_usd": 100_000})
    p = tmp / "job.yaml"
    p.write_text(yaml.safe_dump(job, sort_keys=False))
    return p


def run_batchroute(job: Path, base_url: str, db: Path | None = None) -> tuple[float, Any]:
    """One batchroute run in this process (store and progress on, no TTY); (seconds, report)."""
    import asyncio

    from batchroute.runner import RunOptions, run_job_async
    from batchroute.spec import load_spec

    spec = load_spec(job)
    opts = RunOptions(
        api_key="sk-or-v1-bench",
        base_url=base_url,
        db_path=db or spec.database_path,
        bars=False,  # no TTY: the cron-style progress line (at most once a minute)
        quiet=False,
        handle_signals=False,
        log=lambda _line: None,
    )
    t0 = time.perf_counter()
    report = asyncio.run(run_job_async(spec, opts))
    return time.perf_counter() - t0, report


def run_in_subprocess(job: Path, base_url: str) -> dict[str, Any]:
    """One batchroute run in a fresh interpreter; returns seconds, counts and peak RSS (VmHWM)."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _harness import run_batchroute, peak_rss_kib, peak_rss_children_kib
from pathlib import Path
s, r = run_batchroute(Path({str(job)!r}), {base_url!r})
c = r.counts
print(json.dumps({{"seconds": s, "done": c.done, "skipped": c.skipped, "failed": c.failed,
                  "status": r.status.value, "rss_kib": peak_rss_kib(),
                  "rss_writer_kib": peak_rss_children_kib()}}))
"""
    out = subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
