"""An answer whose `usage` carries no cost and no tokens is not booked at $0 (audit).

A `usage` object without `cost` was priced from its token counts at the catalogue's dearest
prices (older API shapes omit `cost`). A `usage` that is there but says nothing — `{}`, or every
count 0, as OpenAI-compatible servers send when they do not track usage — was priced the same
way: 0 tokens, the request fee at most, about $0, for a call that was billed. No real call has
0 prompt tokens, so such a usage is now no usage: the call keeps its reservation until
GET /generation tells the bill.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import MODEL, StandIn

N = 8


@dataclass
class SilentUsage(StandIn):
    """Bills every generation; its answer's `usage` is `shape` (no cost, no tokens)."""

    shape: Any = None

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, _usage = super()._bill(body, outcome)
        return gid, self.shape


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "shape",
    [{}, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}],
    ids=["empty", "zeros"],
)
@pytest.mark.parametrize("generation_known", [True, False])
async def test_a_usage_that_says_nothing_is_not_booked_at_zero(
    tmp_path: Path, serve: Any, shape: dict[str, Any], stream: bool, generation_known: bool
) -> None:
    """Before: 8 calls billed $0.0100, the database said $0.00 (each booked at the catalogue
    price of 0 tokens), in all 8 cases."""
    standin = SilentUsage("ok", generation_known=generation_known, shape=shape)
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(
        tmp_path, quality=[], endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV}
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": stream}}
    job["limits"] = {**job["limits"], "reconcile_wait_s": 30 if generation_known else 0.5}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(path))
    assert code == 0, err
    assert len(standin.billed) == N
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    results = query(db, "SELECT sum(cost_usd) FROM results")[0][0]
    assert attempts >= standin.total, (attempts, standin.total)
    assert results == attempts
    if generation_known:
        assert attempts == standin.total
