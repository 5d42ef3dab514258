"""The report against the database a real run leaves (issue 13): every total of `report --format
json` equals the same sum computed directly from `attempts` and `results`, per model, tier, task
and day, and the savings; a native_fallback tier's answers are credited to the model that served.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from subprocs import query, run_cli

from batchroute.catalog import Catalog

# The model that served a call: the record's answer came from it when the call is the one that
# produced the answer (same generation id, or the run's successful call); else the model asked.
SERVED = (
    "CASE WHEN r.model_served IS NOT NULL AND (a.generation_id = r.generation_id "
    "OR (a.outcome = 'ok' AND a.run_id = r.run_id)) THEN r.model_served ELSE a.model END"
)
CALL_KEYS = {
    "model": [SERVED, "a.model"],
    "tier": ["a.tier"],
    "task": ["r.task_type"],
    "day": ["strftime(a.started_at, '%Y-%m-%d')"],
}
RECORD_KEYS = {
    "model": ["COALESCE(r.model_served, r.model_requested)", "r.model_requested"],
    "tier": ["r.tier"],
    "task": ["r.task_type"],
    "day": ["strftime(r.created_at, '%Y-%m-%d')"],
}
STATUSES = ("done", "failed", "invalid", "pending")


def report_json(db: Path, by: str) -> dict[str, Any]:
    r = run_cli("report", str(db), "--by", by, "--format", "json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = orjson.loads(r.stdout)
    return doc


def top_prices() -> tuple[Decimal, Decimal, Decimal]:
    """mixed.yaml's top tier is premium: [openai/o3, openai/o1]; the simulator bills the
    shipped catalogue's prices."""
    info = Catalog.shipped().get("openai/o3")
    assert info is not None
    return info.prompt, info.completion, info.request


def direct(db: Path, dim: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per group: calls and cost from attempts; tokens, statuses and savings from results."""
    p, c, q = top_prices()
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(dict)
    ck, rk = CALL_KEYS[dim], RECORD_KEYS[dim]
    n = len(ck)
    for row in query(
        db,
        f"SELECT {', '.join(ck)}, COUNT(*), SUM(a.cost_usd) FROM attempts a "
        "LEFT JOIN results r USING (job_name, record_key) GROUP BY ALL",
    ):
        out[tuple(row[:n])].update(calls=row[n], cost=Decimal(row[n + 1]))
    for row in query(
        db,
        f"SELECT {', '.join(rk)}, SUM(prompt_tokens), SUM(completion_tokens), "
        + "".join(f"COUNT(*) FILTER (WHERE status = '{s}'), " for s in STATUSES)
        + "SUM(prompt_tokens * ? + completion_tokens * ? + ?) "
        "FILTER (WHERE prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL), "
        "SUM(cost_usd) FILTER (WHERE prompt_tokens IS NOT NULL AND completion_tokens IS NOT "
        "NULL) FROM results r GROUP BY ALL",
        [p, c, q],
    ):
        out[tuple(row[:n])].update(
            prompt=row[n] or 0, completion=row[n + 1] or 0,
            statuses=list(row[n + 2 : n + 6]),
            baseline=Decimal(row[n + 6] or 0), priced_cost=Decimal(row[n + 7] or 0),
        )  # fmt: skip
    return out


def test_the_flaky_run_has_what_the_report_must_get_right(flaky_db: Path) -> None:
    """The database exercises retries and a server-side (native_fallback) fallback."""
    (served_by_other,) = query(
        flaky_db,
        "SELECT COUNT(*) FROM results WHERE model_served <> model_requested AND tier = 'mid'",
    )[0]
    assert served_by_other > 0
    assert query(flaky_db, "SELECT COUNT(*) FROM attempts WHERE outcome = 'retry'")[0][0] > 0


def test_a_native_fallback_answer_is_counted_under_the_model_that_served_it(
    flaky_db: Path,
) -> None:
    """Before: the model that served a native fallback had a row with 0 calls, $0.00 and its
    tokens and `done` (calls and cost went to the model asked for)."""
    doc = report_json(flaky_db, "tier,model")
    for row in doc["rows"]:
        has_outcome = row["prompt_tokens"] or row["records"]["done"]
        assert not has_outcome or (row["calls"] > 0 and Decimal(row["cost_usd"]) > 0), row
    fallback = [r for r in doc["rows"] if r["tier"] == "mid" and r["model"] != r["requested"]]
    assert fallback, doc["rows"]
    assert all(r["requested"] == "openai/gpt-4o-mini" for r in fallback)


@pytest.mark.parametrize("dim", ["model", "tier", "task", "day"])
def test_json_totals_equal_direct_sums_over_attempts_and_results(flaky_db: Path, dim: str) -> None:
    doc = report_json(flaky_db, dim)
    expected = direct(flaky_db, dim)
    keys = ["model", "requested"] if dim == "model" else [dim]
    got = {tuple(row[k] for k in keys): row for row in doc["rows"]}
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        assert row["calls"] == want.get("calls", 0), key
        assert Decimal(row["cost_usd"]) == want.get("cost", 0), key
        assert row["prompt_tokens"] == want.get("prompt", 0), key
        assert row["completion_tokens"] == want.get("completion", 0), key
        assert [row["records"][s] for s in STATUSES] == want.get("statuses", [0] * 4), key
        saving = row["savings"]
        assert Decimal(saving["baseline_usd"]) == want.get("baseline", 0), key
        assert Decimal(saving["cost_usd"]) == want.get("priced_cost", 0), key
        assert Decimal(saving["saved_usd"]) == want.get("baseline", 0) - want.get(
            "priced_cost", 0
        ), key
    (calls, cost) = query(flaky_db, "SELECT COUNT(*), SUM(cost_usd) FROM attempts")[0]
    assert doc["totals"]["calls"] == calls == sum(r["calls"] for r in doc["rows"])
    assert Decimal(doc["totals"]["cost_usd"]) == cost


def test_savings_is_one_query_and_matches_the_report(flaky_db: Path) -> None:
    p, c, q = top_prices()
    (baseline, spent) = query(
        flaky_db,
        "SELECT SUM(prompt_tokens * ? + completion_tokens * ? + ?), SUM(cost_usd) FROM results "
        "WHERE prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL",
        [p, c, q],
    )[0]
    (saved, pct) = query(
        flaky_db,
        "SELECT SUM(saved_usd), 100 * SUM(saved_usd) / SUM(baseline_usd) FROM savings",
    )[0]
    assert saved == baseline - spent
    doc = report_json(flaky_db, "day")
    assert Decimal(doc["savings"]["saved_usd"]) == saved
    assert doc["savings"]["baseline_models"] == ["openai/o3"]
    assert f"({pct:.1f} %)" in doc["savings"]["line"]
    table = run_cli("report", str(flaky_db)).stdout
    assert doc["savings"]["line"] in table


def test_views_answer_per_model_questions(flaky_db: Path) -> None:
    latency = query(flaky_db, "SELECT model, p50_ms, p95_ms, p99_ms FROM latency_by_model")
    assert latency
    assert all(p50 <= p95 <= p99 for _, p50, p95, p99 in latency)
    rates = dict(query(flaky_db, "SELECT model, fallback_rate FROM fallback_rates"))
    assert rates["openai/gpt-4o-mini"] > 0  # its native fallbacks count
    failures = query(flaky_db, "SELECT error_type, calls, sample_message FROM failures")
    (failed_calls,) = query(flaky_db, "SELECT COUNT(*) FROM attempts WHERE error_type NOT NULL")[0]
    assert sum(n for _, n, _ in failures) == failed_calls
    assert all(msg for _, _, msg in failures)


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv"])
def test_every_format_prints_money_one_way(flaky_db: Path, fmt: str) -> None:
    out = run_cli("report", str(flaky_db), "--by", "tier,model", "--format", fmt).stdout
    assert "E-" not in out
    assert "E+" not in out
    assert "gemini" in out
    if fmt == "markdown":
        assert "| tier | model | requested |" in out


def test_an_html_path_that_cannot_be_written_is_a_clear_error(
    flaky_db: Path, tmp_path: Path
) -> None:
    target = tmp_path / "no-such-folder" / "report.html"
    r = run_cli("report", str(flaky_db), "--html", str(target))
    assert r.returncode == 2, r.stderr
    assert f"--html {target}: cannot write it" in r.stderr
