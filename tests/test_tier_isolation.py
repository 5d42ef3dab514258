"""No tier blocks another (issue 11): a tier waiting on its model's rpm, its model's own
concurrency limit, or its budget does not hold the run's `concurrency` slots.

The real CLI in a subprocess against the simulator in another. Nothing is timed: the test
waits (with a deadline) until every record of the fast tier is answered, and then looks at how
far the slow tier got, which the slow model's pace bounds.
"""

from __future__ import annotations

import itertools
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import write_job, write_jsonl
from subprocs import Simulator, job_endpoint, query, reaped, simulator, spawn_run, wait_until

SLOW, FAST = "openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct"
N_SLOW, N_FAST = 40, 150


def _by_model(sim: Simulator) -> Counter[str]:
    return Counter(g["model"] for g in sim.ledger()["generations"])


def _job(tmp_path: Path, sim: Simulator, limits: dict[str, Any]) -> Path:
    # The slow tier's records come first, so that its workers are the first to want slots.
    records = [
        {"id": f"s{i}", "text": f"slow {i}", "task": "translation", "target_lang": "fr"}
        for i in range(N_SLOW)
    ]
    records += [
        {"id": f"f{i}", "text": f"fast {i}", "task": "classification", "target_lang": "fr"}
        for i in range(N_FAST)
    ]
    write_jsonl(tmp_path / "in.jsonl", records)
    return write_job(
        tmp_path,
        endpoint=job_endpoint(sim),
        task=None,
        task_field="task",
        tiers={"slow": [SLOW], "fast": [FAST]},
        routing={"translation": "slow", "classification": "fast"},
        request={"max_tokens": 64},
        limits={"concurrency": 8, "requests_per_minute": None, "timeout_s": 30, **limits},
    )


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"per_model_rpm": {SLOW: 60}}, id="rate-limited-model"),
        pytest.param({"per_model_concurrency": {SLOW: 1}}, id="model-concurrency-1"),
    ],
)
def test_a_slow_tier_leaves_the_other_at_full_speed(tmp_path: Path, limits: dict[str, Any]) -> None:
    # The slow model answers in 500 ms; the fast one at once. 60 rpm paces the slow model to
    # one call a second; a concurrency of 1 to two a second.
    with simulator() as sim:
        sim.set_scenario({"models": {SLOW: {"latency_ms": 500}}})
        job = _job(tmp_path, sim, limits)
        with reaped(spawn_run(job)) as proc:
            wait_until(lambda: _by_model(sim)[FAST] >= N_FAST, "every fast record answered")
            slow = _by_model(sim)[SLOW]
            wait_until(lambda: _by_model(sim)[SLOW] >= 4, "a few slow calls too")
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
    # Blocked behind the slow tier, the fast one would get a slot only as often as a slow call
    # frees one: it would finish after most slow records. Unblocked, it finishes first.
    assert slow < N_SLOW // 2, f"the slow tier did {slow} of {N_SLOW} calls first"
    if "per_model_concurrency" in limits:  # and the model's own limit held: one at a time
        calls = query(
            tmp_path / "results.duckdb",
            "SELECT started_at, latency_ms FROM attempts WHERE model = ? ORDER BY started_at",
            [SLOW],
        )
        assert len(calls) >= 4
        for (start, latency), (nxt, _) in itertools.pairwise(calls):
            overlap = start + timedelta(milliseconds=latency) - nxt
            assert overlap < timedelta(milliseconds=50), f"two calls to {SLOW} at once: {calls}"
