"""The runner end to end against the simulator on loopback, asserting on the DuckDB rows.

Faults are scripted per model (`Scenario.from_dict({"script": ...})`); the runner's sleep is a
recording fake, so backoff costs no real time. Every test opens the result file read-only
after the run, the way a user's SQL client would.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import SimClientFactory
from factories import TIERS, make_spec, texts, write_jsonl

from batchroute.errors import AuthError
from batchroute.runner import RunOptions, RunReport, run_job_async
from batchroute.simulator import Scenario, SimulatorThread, load_scenario
from batchroute.types import RunStatus

MINI, GEMINI = TIERS["mid"]
SONNET = TIERS["standard"][0]


class RecordingSleep:
    """The runner's injected sleep: remembers each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def sim_url(sim_client: SimClientFactory, script: dict[str, list[Any]] | None = None) -> str:
    client = await sim_client(Scenario.from_dict({"script": script or {}}))
    return str(client.make_url("/api/v1"))


async def run(
    tmp_path: Path,
    base_url: str,
    records: list[dict[str, Any] | str],
    sleep: RecordingSleep | None = None,
    **job: Any,
) -> RunReport:
    write_jsonl(tmp_path / "in.jsonl", records)
    spec = make_spec(tmp_path, **job)
    opts = RunOptions(
        api_key="sk-or-v1-test",
        base_url=base_url,
        handle_signals=False,
        sleep=sleep or RecordingSleep(),
        jitter_seed=0,
        log=lambda _line: None,
    )
    return await run_job_async(spec, opts)


def rows(tmp_path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    con = duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True)
    try:
        cur = con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def result(tmp_path: Path, key: str) -> dict[str, Any]:
    (row,) = rows(tmp_path, "SELECT * FROM results WHERE record_key = ?", key)
    return row


def attempts(tmp_path: Path, key: str) -> list[dict[str, Any]]:
    return rows(tmp_path, "SELECT * FROM attempts WHERE record_key = ? ORDER BY attempt_no", key)


def trail(tmp_path: Path, key: str) -> list[tuple[str, str]]:
    return [(a["model"], a["outcome"]) for a in attempts(tmp_path, key)]


# --- the clean path and money ------------------------------------------------------------------


async def test_clean_run_one_done_row_per_record_cost_equals_ledger(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    sim = await sim_client()
    report = await run(tmp_path, str(sim.make_url("/api/v1")), texts(40))
    assert report.status is RunStatus.COMPLETED
    assert report.error is None
    assert (report.counts.done, report.counts.failed, report.counts.invalid) == (40, 0, 0)
    res = rows(tmp_path, "SELECT * FROM results")
    assert len(res) == 40
    assert {r["status"] for r in res} == {"done"}
    assert all(r["cost_usd"] > 0 and r["cost_source"] == "openrouter" for r in res)
    assert all(r["tier"] == "mid" and r["model_served"] == MINI for r in res)
    assert all(r["output"].startswith(f"[sim {MINI}]") for r in res)
    ledger = await (await sim.get("/sim/ledger")).json()
    total = sum((r["cost_usd"] for r in res), Decimal(0))
    assert total == Decimal(ledger["total_cost_usd"])  # exact, to the 12th decimal
    assert ledger["calls"] == 40
    (run_row,) = rows(tmp_path, "SELECT * FROM runs")
    assert run_row["status"] == "completed"
    assert run_row["records_done"] == 40
    assert run_row["cost_usd"] == total
    assert report.counts.cost_usd == total


async def test_result_cost_is_the_sum_of_its_attempts(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    """Under random faults too: results.cost_usd = Σ attempts.cost_usd for every record."""
    flaky = load_scenario("flaky").to_dict()
    flaky.update(rate_empty=0.05, rate_choice_error=0.05, rate_429=0.1, retry_after_s=0)
    client = await sim_client(Scenario.from_dict(flaky), seed=3)
    await run(tmp_path, str(client.make_url("/api/v1")), texts(120))
    mismatched = rows(
        tmp_path,
        """SELECT r.record_key, r.cost_usd, r.attempts, sum(a.cost_usd) AS a_cost,
                  count(a.record_key) AS n
           FROM results r LEFT JOIN attempts a USING (job_name, record_key)
           GROUP BY ALL
           HAVING r.cost_usd <> coalesce(sum(a.cost_usd), 0)
               OR r.attempts <> count(a.record_key)""",
    )
    assert mismatched == []
    retried = rows(tmp_path, "SELECT count(*) AS n FROM results WHERE attempts > 1")
    assert retried[0]["n"] > 0  # the scenario really did exercise the retry paths


# --- retries, fallback, escalation ---------------------------------------------------------------


async def test_429_then_success_honours_retry_after(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    url = await sim_url(sim_client, {MINI: [{"fault": "429", "retry_after_s": 3}, "ok"]})
    sleep = RecordingSleep()
    await run(tmp_path, url, texts(1), sleep)
    assert len(sleep.delays) == 1
    assert sleep.delays[0] >= 3
    a = attempts(tmp_path, "r00000")
    assert [(x["model"], x["outcome"], x["http_status"]) for x in a] == [
        (MINI, "retry", 429),
        (MINI, "ok", 200),
    ]
    assert a[0]["error_type"] is not None
    r = result(tmp_path, "r00000")
    assert (r["status"], r["attempts"], r["model_served"]) == ("done", 2, MINI)


async def test_502s_fall_back_to_the_next_model_of_the_chain(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    url = await sim_url(sim_client, {MINI: ["502", "502", "502"]})
    sleep = RecordingSleep()
    await run(tmp_path, url, texts(1), sleep)
    assert trail(tmp_path, "r00000") == [
        (MINI, "retry"),
        (MINI, "retry"),
        (MINI, "fallback"),
        (GEMINI, "ok"),
    ]
    assert len(sleep.delays) == 2  # backoff between the retries, none before the fallback
    r = result(tmp_path, "r00000")
    assert (r["status"], r["model_requested"], r["model_served"]) == ("done", GEMINI, GEMINI)
    assert (r["tier"], r["attempts"], r["escalations"]) == ("mid", 4, 0)


async def test_http_200_with_error_body_is_retried(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    url = await sim_url(sim_client, {MINI: ["200_error", "choice_error", "ok"]})
    await run(tmp_path, url, texts(1))
    a = attempts(tmp_path, "r00000")
    assert [(x["model"], x["outcome"]) for x in a] == [
        (MINI, "retry"),
        (MINI, "retry"),
        (MINI, "ok"),
    ]
    assert a[0]["http_status"] == 502  # the status hidden in the 200 body
    assert result(tmp_path, "r00000")["status"] == "done"


async def test_whole_chain_down_escalates_to_the_next_tier_when_the_job_opts_in(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    url = await sim_url(sim_client, {MINI: ["503"] * 3, GEMINI: ["502"] * 3})
    await run(tmp_path, url, texts(1), escalate_on=["quality", "unavailable"])
    assert trail(tmp_path, "r00000") == [
        (MINI, "retry"),
        (MINI, "retry"),
        (MINI, "fallback"),
        (GEMINI, "retry"),
        (GEMINI, "retry"),
        (GEMINI, "escalate"),
        (SONNET, "ok"),
    ]
    tiers = [a["tier"] for a in attempts(tmp_path, "r00000")]
    assert tiers == ["mid"] * 6 + ["standard"]
    r = result(tmp_path, "r00000")
    assert (r["status"], r["tier"], r["escalations"], r["attempts"]) == ("done", "standard", 1, 7)
    assert r["model_served"] == SONNET


async def test_whole_chain_down_leaves_the_record_pending_not_escalated(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    """An outage is not the record's fault: it stays pending for tomorrow (never a dearer
    tier unless the job opts in, never a `failed` row the next night would skip)."""
    url = await sim_url(sim_client, {MINI: ["503"] * 3, GEMINI: ["502"] * 3})
    limits = {"concurrency": 1}  # one at a time: r00000 gets the script
    report = await run(tmp_path, url, texts(2), limits=limits)
    assert (report.counts.pending, report.counts.done, report.counts.failed) == (1, 1, 0)
    assert report.status is RunStatus.UNAVAILABLE
    pending = rows(tmp_path, "SELECT * FROM results WHERE status = 'pending'")
    assert len(pending) == 1
    r = pending[0]
    assert r["error_type"] == "unavailable"
    assert "Provider returned error" in r["error_message"]
    assert (r["attempts"], r["escalations"], r["tier"]) == (6, 0, "mid")
    outcomes = [x["outcome"] for x in attempts(tmp_path, r["record_key"])]
    assert outcomes == ["retry", "retry", "fallback", "retry", "retry", "deferred"]


async def test_empty_answer_fails_the_quality_check_and_escalates(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    url = await sim_url(sim_client, {MINI: ["empty"]})
    await run(tmp_path, url, texts(1))
    a = attempts(tmp_path, "r00000")
    assert [(x["model"], x["outcome"], x["tier"]) for x in a] == [
        (MINI, "escalate", "mid"),
        (SONNET, "ok", "standard"),
    ]
    assert a[0]["error_type"] == "empty_content"
    assert a[0]["cost_usd"] > 0  # the empty answer was billed for its prompt
    r = result(tmp_path, "r00000")
    assert (r["status"], r["tier"], r["escalations"]) == ("done", "standard", 1)
    assert r["cost_usd"] == a[0]["cost_usd"] + a[1]["cost_usd"]


async def test_rejected_model_falls_back_at_once_without_retry(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    url = await sim_url(sim_client, {MINI: ["400_context"]})
    sleep = RecordingSleep()
    await run(tmp_path, url, texts(1), sleep)
    assert trail(tmp_path, "r00000") == [(MINI, "fallback"), (GEMINI, "ok")]
    assert sleep.delays == []


# --- the run stops -----------------------------------------------------------------------------


async def test_401_stops_the_run_with_an_auth_error(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    url = await sim_url(sim_client, {"*": ["401"] * 50})
    report = await run(tmp_path, url, texts(30), limits={"concurrency": 4})
    assert isinstance(report.error, AuthError)
    assert report.status is RunStatus.FAILED
    assert report.counts.done == 0
    statuses = {r["status"] for r in rows(tmp_path, "SELECT status FROM results")}
    assert statuses <= {"pending"}  # nothing was decided: the next run (with a key) redoes them
    fatal = rows(tmp_path, "SELECT * FROM attempts WHERE outcome = 'fatal'")
    assert fatal
    assert all(a["http_status"] == 401 for a in fatal)
    calls = rows(tmp_path, "SELECT count(*) AS n FROM attempts")[0]["n"]
    assert calls <= 4  # no new calls after the first 401, only those already in flight
    (run_row,) = rows(tmp_path, "SELECT status FROM runs")
    assert run_row["status"] == "failed"


# --- bad input ---------------------------------------------------------------------------------


async def test_malformed_lines_and_missing_fields_become_invalid_rows(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    good = texts(5)
    lines: list[dict[str, Any] | str] = [
        good[0],
        "this is not json",
        good[1],
        "[1, 2, 3]",
        {"id": "no-lang", "text": "missing its target_lang"},
        good[2],
        '{"id": "truncated", "text": "ab',
        good[3],
        good[4],
    ]
    report = await run(tmp_path, await sim_url(sim_client), lines)
    assert (report.counts.done, report.counts.invalid) == (5, 4)
    assert report.status is RunStatus.COMPLETED
    invalid = rows(tmp_path, "SELECT * FROM results WHERE status = 'invalid' ORDER BY line_no")
    assert [r["line_no"] for r in invalid] == [2, 4, 5, 7]
    assert all(r["error_type"] and r["error_message"] for r in invalid)
    assert "target_lang" in invalid[2]["error_message"]
    assert invalid[2]["record_key"] == "no-lang"
    done = rows(tmp_path, "SELECT record_key FROM results WHERE status = 'done'")
    assert {r["record_key"] for r in done} == {g["id"] for g in good}
    assert rows(tmp_path, "SELECT count(*) AS n FROM attempts")[0]["n"] == 5


# --- OpenRouter routing options and cooldown ---------------------------------------------------


async def test_native_fallback_sends_models_and_records_the_serving_model(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    """The simulator only serves GEMINI for a MINI request if `models` named it."""
    url = await sim_url(sim_client, {MINI: ["502"]})
    tiers = {**TIERS, "mid": {"models": [MINI, GEMINI], "native_fallback": True}}
    await run(tmp_path, url, texts(1), tiers=tiers)
    assert trail(tmp_path, "r00000") == [(MINI, "ok")]  # one call: OpenRouter fell back itself
    r = result(tmp_path, "r00000")
    assert (r["model_requested"], r["model_served"]) == (MINI, GEMINI)
    assert r["output"].startswith(f"[sim {GEMINI}]")


async def test_a_model_failing_repeatedly_is_cooled_down(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    """After `cooldown_after` failures in a row later records go straight to the fallback."""
    url = await sim_url(sim_client, {MINI: ["502"] * 20})
    limits = {"concurrency": 1, "max_attempts": 1, "cooldown_after": 2, "cooldown_s": 600}
    await run(tmp_path, url, texts(6), limits=limits)
    assert trail(tmp_path, "r00000") == [(MINI, "fallback"), (GEMINI, "ok")]
    assert trail(tmp_path, "r00001") == [(MINI, "fallback"), (GEMINI, "ok")]
    for key in ("r00002", "r00003", "r00004", "r00005"):
        assert trail(tmp_path, key) == [(GEMINI, "ok")]
    n = rows(tmp_path, "SELECT count(*) AS n FROM attempts WHERE model = ?", MINI)[0]["n"]
    assert n == 2


async def test_cooldown_counts_only_consecutive_failures(
    tmp_path: Path, sim_client: SimClientFactory
) -> None:
    """A success in between resets the streak: fail, ok, fail, ok… never cools the model."""
    url = await sim_url(sim_client, {MINI: ["502", "ok"] * 4})
    limits = {"concurrency": 1, "max_attempts": 1, "cooldown_after": 2, "cooldown_s": 600}
    await run(tmp_path, url, texts(6), limits=limits)
    first_models = rows(
        tmp_path,
        "SELECT record_key, model FROM attempts WHERE attempt_no = 1 ORDER BY record_key",
    )
    assert [r["model"] for r in first_models] == [MINI] * 6


# --- chaos -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_chaos_on_2000_records_every_record_ends_final_within_limits(
    tmp_path: Path,
) -> None:
    chaos = load_scenario("chaos").to_dict()
    chaos["hang_s"] = 1.0  # really sleeps (SimulatorThread): longer than the 0.5 s timeout
    chaos["retry_after_s"] = 0.01
    limits = {"concurrency": 64, "timeout_s": 0.5, "max_attempts": 3, "max_escalations": 1}
    n = 2000
    with SimulatorThread(Scenario.from_dict(chaos), seed=7) as sim:
        report = await run(tmp_path, sim.base_url, texts(n), limits=limits)
    assert report.error is None
    # A record whose whole chain was down (outage window, hangs) waits for the next run.
    assert report.status in (RunStatus.COMPLETED, RunStatus.UNAVAILABLE)
    c = report.counts
    assert c.done + c.failed + c.pending == n
    assert c.pending < n / 20
    res = rows(tmp_path, "SELECT * FROM results")
    assert len(res) == n
    assert {r["status"] for r in res} <= {"done", "failed", "pending"}
    not_done = [r for r in res if r["status"] != "done"]
    assert all(r["error_type"] for r in not_done)
    assert all(r["error_type"] == "unavailable" for r in res if r["status"] == "pending")
    models_per_tier = len(TIERS["mid"])
    cap = limits["max_attempts"] * models_per_tier * (1 + limits["max_escalations"])
    per_record: dict[str, int] = defaultdict(int)
    for a in rows(tmp_path, "SELECT record_key FROM attempts"):
        per_record[a["record_key"]] += 1
    assert max(per_record.values()) <= cap
    assert all(r["attempts"] == per_record[r["record_key"]] for r in res)
    assert all(r["escalations"] <= limits["max_escalations"] for r in res)
    outcomes = {a["outcome"] for a in rows(tmp_path, "SELECT DISTINCT outcome FROM attempts")}
    assert {"ok", "retry"} <= outcomes  # the chaos really happened
