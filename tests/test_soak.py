"""The bad-night soak, small enough for CI (issue 9; the full 10,000-record run is
`tests/bench/bench_soak.py`): chaos at concurrency 64, a reader opening the database every
few seconds, one kill -9 midway, then reruns."""

from __future__ import annotations

from pathlib import Path

import pytest
from soak import run_soak


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_chaos_reader_kill_rerun(tmp_path: Path) -> None:
    r = run_soak(tmp_path, 2_000, concurrency=64, kill_after_calls=600)
    print(r)
    assert r.tracebacks == 0
    assert r.exit_codes[-1] in (0, 4), r.exit_codes
    assert set(r.statuses) <= {"done", "failed"}, r.statuses
    assert sum(r.statuses.values()) == r.records
    assert r.untyped_failures == 0
    # Answers billed but never written: only those in flight at the kill (≤ concurrency).
    assert r.unlogged_answers <= 64, r.unlogged_answers
    # The database never says less than the bill (calls in flight at the kill are journaled
    # at their reservation before they are sent); what it says more is still reserved.
    assert r.db_usd >= r.ledger_usd, (r.db_usd, r.ledger_usd)
    assert r.db_usd - r.ledger_usd <= r.reserved_usd, (r.db_usd, r.ledger_usd, r.reserved_usd)
