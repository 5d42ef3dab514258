"""Test factories shared by runner, money and resume tests (plain functions, no fixtures)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from batchroute.runner import RunOptions
from batchroute.spec import JobSpec, load_spec

TIERS = {
    "budget": ["meta-llama/llama-3.1-8b-instruct", "qwen/qwen-2.5-7b-instruct"],
    "mid": ["openai/gpt-4o-mini", "google/gemini-2.0-flash-001"],
    "standard": ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"],
    "premium": ["openai/o1", "openai/o3"],
}


def write_jsonl(path: Path, records: Iterable[dict[str, Any] | str]) -> Path:
    """One JSON object per line; a `str` item is written as a raw (possibly broken) line."""
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def texts(n: int, *, prefix: str = "r") -> list[dict[str, Any]]:
    """n simple translation records with ids `r00000`…"""
    langs = ["French", "German", "Spanish", "Japanese"]
    return [
        {
            "id": f"{prefix}{i:05d}",
            "text": f"Sentence number {i} to translate. " * (1 + i % 4),
            "target_lang": langs[i % 4],
        }
        for i in range(n)
    ]


def job_dict(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A job as a dict: translation into the `mid` tier, simulator-friendly limits."""
    job: dict[str, Any] = {
        "name": "t",
        "input": str(tmp_path / "in.jsonl"),
        "id_field": "id",
        "prompt": {"system": "You translate.", "user": "Translate into {target_lang}:\n\n{text}"},
        "task": "translation",
        "tiers": TIERS,
        "request": {"max_tokens": 256},
        "limits": {
            "concurrency": 16,
            "requests_per_minute": None,
            "timeout_s": 5,
            "backoff_base_s": 0.01,
            "backoff_max_s": 5,
        },
        "budget": {"daily_usd": 10},
        "output": {"database": str(tmp_path / "results.duckdb")},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(job.get(key), dict):
            job[key] = {**job[key], **value}
        else:
            job[key] = value
    return job


def make_spec(tmp_path: Path, **overrides: Any) -> JobSpec:
    """Write the job file to tmp_path/job.yaml and load it the way the CLI does."""
    return load_spec(write_job(tmp_path, **overrides))


def write_job(tmp_path: Path, **overrides: Any) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(job_dict(tmp_path, **overrides), sort_keys=False))
    return p


def standin_job(
    tmp_path: Path,
    base_url: str,
    *,
    model: str,
    cap: Any,
    records: Iterable[dict[str, Any] | str],
    limits: dict[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    """The money audits' job: one unstreamed `premium` model behind a stand-in at `base_url`
    (its key in `subprocs.KEY_ENV`), a daily cap, no quality checks; writes the input and the
    job file and returns the job file's path."""
    # Here, not at the top: the benchmarks import this module as `tests.factories`, without
    # `tests/` on the path, and need none of the subprocess helpers.
    from subprocs import KEY_ENV

    write_jsonl(tmp_path / "in.jsonl", records)
    job = job_dict(
        tmp_path,
        quality=[],
        endpoint={"base_url": base_url, "api_key_env": KEY_ENV},
        budget={"daily_usd": float(cap)},
        **overrides,
    )
    job["tiers"] = {"premium": {"models": [model], "stream": False}}
    job["limits"] = {**job["limits"], **(limits or {})}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def clocked_opts(base_url: str, db: Path, clock: list[datetime]) -> RunOptions:
    """RunOptions of an in-process `--wait` run on an injected clock: each of the run's
    sleeps moves `clock[0]` on instead of waiting (a batch's polls span minutes or hours);
    more than two days of them is a run that would never end."""
    start = clock[0]

    async def tick(s: float) -> None:
        clock[0] += timedelta(seconds=s)
        if clock[0] > start + timedelta(days=2):
            raise AssertionError("still polling after two days")

    return RunOptions(
        api_key="sk-or-v1-test", base_url=base_url, db_path=db, handle_signals=False,
        quiet=True, sleep=tick, jitter_seed=0, log=lambda _l: None, wait=True,
        now=lambda: clock[0],
    )  # fmt: skip


def batch_job(tmp_path: Path, model: str, n: int) -> Path:
    """A job file of `n` records with one batch tier of `model` (no quality checks)."""
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(tmp_path, quality=[], limits={"timeout_s": 0.5})
    job["tiers"] = {"mid": {"models": [model], "batch": True}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path
