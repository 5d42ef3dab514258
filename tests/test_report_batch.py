"""The batch lane in reports (issue 13's attribution, issue 14's lane): a batch call is credited
to the model that served it, without the `:batch` suffix of the id it was sent to, beside the
requested id as sent; `lane` tells a batch call from a synchronous one. Checked on a real batch
run (the CLI against the simulator, a quarter of the items failing and retried synchronously),
every total of the report equal to the same sum in SQL over `attempts` and `results`."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import query, run_cli

MODEL = "openai/gpt-4o-mini"
N = 80
# The model that served a call, by hand: the record's answer for its kept call, else the id
# the call went to; neither with the batch variant's suffix.
SERVED = (
    "regexp_replace(CASE WHEN r.model_served IS NOT NULL AND (a.generation_id = r.generation_id "
    "OR (a.outcome = 'ok' AND a.run_id = r.run_id)) THEN r.model_served ELSE a.model END, "
    "':batch$', '')"
)


@pytest.fixture(scope="module")
def batch_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("batchreport")
    write_jsonl(tmp / "in.jsonl", texts(N))
    scenario = tmp / "items.json"
    scenario.write_text(json.dumps({
        "rate_batch_item_error": 0.25, "batch_listed_models": [MODEL], "batch_validating_s": 0,
        "batch_in_progress_s": 0, "batch_finalizing_s": 0, "batch_not_found_s": 0,
    }))  # fmt: skip
    job = job_dict(tmp, quality=[], output={"database": str(tmp / "b.duckdb")})
    job["tiers"] = {"mid": {"models": [MODEL], "batch": True}}
    (tmp / "j.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    r = run_cli("run", str(tmp / "j.yaml"), "--simulate", "--wait", "--scenario", str(scenario))
    assert r.returncode == 0, r.stderr
    db = tmp / "b.simulated.duckdb"
    # what the test needs: batch answers, batch failures retried synchronously, :batch ids
    outcomes = dict(query(db, "SELECT outcome, count(*) FROM attempts WHERE attempt_no = 0 "
                              "AND model = ? GROUP BY 1", [f"{MODEL}:batch"]))  # fmt: skip
    assert outcomes.get("ok", 0) > 0
    assert outcomes.get("fallback", 0) > 0
    assert query(db, "SELECT count(*) FROM attempts WHERE attempt_no > 0")[0][0] > 0
    return db


def report(db: Path, by: str) -> dict[str, Any]:
    r = run_cli("report", str(db), "--by", by, "--format", "json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = orjson.loads(r.stdout)
    return doc


def test_one_model_is_one_model_whichever_lane_served_it(batch_db: Path) -> None:
    """Before: `--by tier,model` had a `gpt-4o-mini:batch` model row for the failed batch
    items beside `gpt-4o-mini` for the answered ones."""
    doc = report(batch_db, "tier,model")
    assert {r["model"] for r in doc["rows"]} == {MODEL}
    assert {r["requested"] for r in doc["rows"]} == {MODEL, f"{MODEL}:batch"}  # as sent
    direct = {
        (m, req): (n, Decimal(c))
        for m, req, n, c in query(
            batch_db,
            f"SELECT {SERVED}, a.model, count(*), sum(a.cost_usd) FROM attempts a "
            "LEFT JOIN results r USING (job_name, record_key) GROUP BY ALL",
        )
    }
    got = {(r["model"], r["requested"]): (r["calls"], Decimal(r["cost_usd"])) for r in doc["rows"]}
    assert got == direct


def test_an_answered_batch_call_is_not_a_fallback(batch_db: Path) -> None:
    """Before: every answered batch call counted as served by another model (the answer names
    `gpt-4o-mini`, the call went to `gpt-4o-mini:batch`): a fallback rate of 83 %."""
    doc = report(batch_db, "model")
    ((fallbacks,),) = query(batch_db, "SELECT count(*) FROM attempts WHERE outcome = 'fallback'")
    assert doc["totals"]["calls_by_outcome"]["fell_back"] == fallbacks
    rates = query(
        batch_db,
        "SELECT model, sum(served_by_other), sum(fell_back) FROM fallback_rates GROUP BY 1",
    )
    assert {m: (int(o), int(f)) for m, o, f in rates} == {
        MODEL: (0, 0),
        f"{MODEL}:batch": (0, fallbacks),
    }


def test_by_lane_totals_equal_direct_sql(batch_db: Path) -> None:
    doc = report(batch_db, "lane")
    got = {r["lane"]: r for r in doc["rows"]}
    per_lane = query(
        batch_db,
        "SELECT CASE WHEN attempt_no = 0 THEN 'batch' ELSE 'sync' END, count(*), sum(cost_usd) "
        "FROM attempts GROUP BY 1",
    )
    calls = {lane: n for lane, n, _ in per_lane}
    cost = {lane: c for lane, _, c in per_lane}
    # a record's lane is where its answer came from: its run's batch call answered it
    answered = (
        "EXISTS (SELECT 1 FROM attempts a WHERE a.job_name = r.job_name AND a.record_key = "
        "r.record_key AND a.run_id = r.run_id AND a.attempt_no = 0 AND a.outcome = 'ok')"
    )
    records = {
        lane: (int(done), int(p), int(c))
        for lane, done, p, c in query(
            batch_db,
            f"SELECT CASE WHEN {answered} THEN 'batch' ELSE 'sync' END, "
            "count(*) FILTER (WHERE status = 'done'), sum(prompt_tokens), "
            "sum(completion_tokens) FROM results r GROUP BY 1",
        )
    }
    assert set(got) == {"batch", "sync"} == set(calls) == set(records)
    for lane, row in got.items():
        assert row["calls"] == calls[lane], lane
        assert Decimal(row["cost_usd"]) == cost[lane], lane
        assert (row["records"]["done"], row["prompt_tokens"], row["completion_tokens"]) == (
            records[lane]
        ), lane
    ((all_calls, all_cost),) = query(batch_db, "SELECT count(*), sum(cost_usd) FROM attempts")
    assert doc["totals"]["calls"] == all_calls
    assert Decimal(doc["totals"]["cost_usd"]) == all_cost
    assert doc["totals"]["records"]["done"] == N


def test_batch_queue_time_is_not_a_model_s_latency(batch_db: Path) -> None:
    """A batch call's latency is its wait in OpenRouter's queue (minutes to 24 h): kept out of
    the latency percentiles, which describe synchronous calls."""
    ((sync_calls,),) = query(batch_db, "SELECT count(*) FROM attempts WHERE attempt_no > 0 "
                                       "AND latency_ms > 0")  # fmt: skip
    doc = report(batch_db, "model")
    assert [(x["model"], x["calls"]) for x in doc["latency_ms"]] == [(MODEL, sync_calls)]
    assert query(batch_db, "SELECT model, calls FROM latency_by_model") == [(MODEL, sync_calls)]


def test_the_html_page_labels_the_batch_lane(batch_db: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    r = run_cli("report", str(batch_db), "--html", str(page))
    assert r.returncode == 0, r.stderr
    text = page.read_text(encoding="utf-8")
    assert f"{MODEL} (batch)" in text
    assert "(for gpt-4o-mini:batch)" not in text
