"""A record left pending mid-escalation paid its cheap tier again at every rerun (audit6).

Design §6: an answer that fails a quality check (here: empty content, pitfall 10) climbs to the
next tier. When that tier is down (503 at every attempt: not billed), the record is deferred
(`pending`) for the next run, which is right. But the next run starts it from its own tier
again: the cheap model is paid once more for an answer already known to fail, at every rerun
until the dear tier is back. (The last note listed this as an audit theory without a test.)

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import COMPLETION_PRICE, MODEL, PROMPT_PRICE, StandIn

CHEAP, DEAR = MODEL, "example/dear"
N = 3


@dataclass
class CheapEmptyDearDown(StandIn):
    """The cheap model answers (billed) with empty content; the dear one is down (503)."""

    async def models(self, _: web.Request) -> web.Response:
        def entry(mid: str, factor: int) -> dict[str, Any]:
            return {
                "id": mid,
                "context_length": 128_000,
                "pricing": {
                    "prompt": str(PROMPT_PRICE * factor),
                    "completion": str(COMPLETION_PRICE * factor),
                },
                "top_provider": {"context_length": 128_000, "max_completion_tokens": 16_384},
                "supported_parameters": ["max_tokens"],
            }

        return web.json_response({"data": [entry(CHEAP, 1), entry(DEAR, 10)]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body["model"] == DEAR:
            err = {"code": 503, "message": "No instances available", "metadata": {}}
            return web.json_response({"error": err}, status=503)
        gid, usage = self._bill(body, "ok")
        choice = {"index": 0, "finish_reason": "stop", "message": {"content": ""}}
        answer = {"id": gid, "model": CHEAP, "choices": [choice], "usage": usage}
        return web.json_response(answer, headers={"X-Generation-Id": gid})


async def test_a_rerun_does_not_pay_again_for_an_answer_known_to_fail(
    tmp_path: Path, serve: Any
) -> None:
    """Before (4fb9e65): run 1 pays the cheap model 3 times (one a record), run 2 pays it
    3 times more for the same empty answers; each run ends pending (exit 6)."""
    standin = CheapEmptyDearDown("ok")
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(
        tmp_path,
        endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV},
        limits={"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05},
    )
    job["tiers"] = {"cheap": {"models": [CHEAP]}, "dear": {"models": [DEAR]}}
    job["routing"] = {"translation": "cheap"}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, err = await run_cli_async("run", str(path))
    db = tmp_path / "results.duckdb"
    assert code == 6, err
    assert len(standin.billed) == N
    assert query(db, "SELECT DISTINCT status FROM results") == [("pending",)]
    code, err = await run_cli_async("run", str(path))
    assert code == 6, err
    paid = query(db, "SELECT count(*) FROM attempts WHERE model = ?", [CHEAP])
    assert len(standin.billed) == N, f"cheap model paid {len(standin.billed)} times ({paid})"
