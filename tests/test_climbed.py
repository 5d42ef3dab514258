"""Which paid answers send a pending record past a tier at the next start (`store.runs.climbed`,
gaps6, narrowed after the review): only answers the quality checks rejected, since the record
last ended. Real DuckDB file, migrated by the store; the rows are the journal's shape.

Before the review, an escalation from before the record was final (an old input line, or its
first run before `--rerun-changed`) sent a changed record straight to the dear tier (4 of 4 in
the review's run, the cheap tier that would have answered never asked), and an outage's
escalation answered 200 (`no_choices`) counted as a rejected answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from batchroute.store import runs
from batchroute.store.result_store import ResultStore

T0 = datetime(2026, 12, 7, 1, 0, 0)


def _db(tmp_path: Path, status: str, attempts: list[tuple[str, str, str | None]]) -> Path:
    """One record `k` of job `j` with `status`, and its `attempts` (tier, outcome, error type),
    a minute apart, in that order."""
    path = tmp_path / "r.duckdb"
    ResultStore(path).migrate()
    con = duckdb.connect(str(path))
    con.execute(
        "INSERT INTO results (job_name, record_key, status, tier) VALUES ('j', 'k', ?, 'cheap')",
        [status],
    )
    for n, (tier, outcome, error) in enumerate(attempts):
        con.execute(
            "INSERT INTO attempts (run_id, job_name, record_key, attempt_no, tier, model, "
            "started_at, http_status, outcome, error_type) VALUES "
            "('r', 'j', 'k', ?, ?, 'm', ?, 200, ?, ?)",
            [n + 1, tier, T0 + timedelta(minutes=n), outcome, error],
        )
    con.close()
    return path


def _climbed(path: Path) -> dict[str, tuple[str, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return runs.climbed(con, "j")
    finally:
        con.close()


@pytest.mark.parametrize("error", ["empty_content", "finish_length", "invalid_json"])
def test_a_rejected_answer_of_a_pending_record_counts(tmp_path: Path, error: str) -> None:
    path = _db(tmp_path, "pending", [("cheap", "escalate", error), ("mid", "deferred", None)])
    assert _climbed(path) == {"k": ("cheap",)}


@pytest.mark.parametrize("error", ["no_choices", "malformed_response", "provider_unavailable"])
def test_an_outage_escalation_answered_200_does_not(tmp_path: Path, error: str) -> None:
    path = _db(tmp_path, "pending", [("cheap", "escalate", error), ("mid", "deferred", None)])
    assert _climbed(path) == {}


@pytest.mark.parametrize("ended", ["ok", "failed"])
def test_escalations_before_the_record_last_ended_do_not(tmp_path: Path, ended: str) -> None:
    """The review's night: done after a climb, its line changed, sent again from its routed
    tier, which was down: pending. The climb was about the old request."""
    path = _db(
        tmp_path,
        "pending",
        [
            ("cheap", "escalate", "empty_content"),
            ("premium", ended, None if ended == "ok" else "bad_request"),
            ("cheap", "deferred", None),
        ],
    )
    assert _climbed(path) == {}


def test_a_climb_after_the_record_ended_counts(tmp_path: Path) -> None:
    path = _db(
        tmp_path,
        "pending",
        [
            ("cheap", "escalate", "empty_content"),
            ("premium", "ok", None),
            ("cheap", "escalate", "empty_content"),  # the new request's answer, rejected
            ("mid", "escalate", "finish_length"),
            ("premium", "deferred", None),
        ],
    )
    assert {k: sorted(v) for k, v in _climbed(path).items()} == {"k": ["cheap", "mid"]}


@pytest.mark.parametrize("status", ["done", "failed"])
def test_a_final_record_is_never_climbed(tmp_path: Path, status: str) -> None:
    path = _db(tmp_path, status, [("cheap", "escalate", "empty_content")])
    assert _climbed(path) == {}
