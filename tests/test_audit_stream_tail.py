"""A streamed answer whose usage chunk never comes is kept, not paid for again (audit).

OpenRouter sends a stream's usage in a chunk of its own *after* the chunk that carries
`finish_reason` (openrouter-api.md §1.4). When the connection broke between the two (a reset,
a proxy timing out, the provider's connection dropped), the answer was whole and billed, but
the client called the stream cut and threw the answer away: the record was sent again and paid
again, and with every attempt cut the same way it was paid `max_attempts` times and left for the
next run, with none of its paid answers stored.

Real CLI in a subprocess against a stand-in streaming on a loopback port, real DuckDB file.
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
from test_billing_standin import MODEL, StandIn

N = 6


@dataclass
class CutBeforeUsage(StandIn):
    """Streams the answer and its finish chunk, then the connection breaks: no usage chunk,
    no [DONE]. Billed all the same; GET /generation knows the cost."""

    async def _stream(
        self, request: web.Request, gid: str, answer: dict[str, Any], outcome: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Generation-Id": gid}
        )
        await resp.prepare(request)
        await resp.write(b": OPENROUTER PROCESSING\n\n")
        delta = {"content": "bonjour"}
        done = {"id": gid, "model": answer["model"], "provider": "Stand-In",
                "choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}]}  # fmt: skip
        await resp.write(b"data: " + orjson.dumps(done) + b"\n\n")
        assert request.transport is not None
        request.transport.abort()
        return resp


async def test_an_answer_cut_before_its_usage_chunk_is_kept_and_paid_once(
    tmp_path: Path, serve: Any
) -> None:
    """Before: 6 records, 3 attempts each, every one cut after its finish chunk: 18 calls
    billed ($0.0225; the database agreed, by /generation), the 6 records left `pending`
    (exit 6, to be paid again by the next run), none of the 18 paid answers stored."""
    standin = CutBeforeUsage("ok")
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(
        tmp_path, quality=[], endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV}
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": True}}
    job["limits"] = {**job["limits"], "max_attempts": 3, "reconcile_wait_s": 30}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(path))
    rows = query(db, "SELECT status, output, count(*) FROM results GROUP BY ALL")
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert attempts >= standin.total, (attempts, standin.total)
    assert len(standin.billed) == N, f"{len(standin.billed)} calls billed for {N} records"
    assert rows == [("done", "bonjour", N)], rows
    assert code == 0, err
