"""A Cloudflare 524 is not a call that cost nothing (audit).

OpenRouter sits behind Cloudflare. A 524 ("A timeout occurred") is Cloudflare's answer when the
origin sent nothing within its limit: the origin had the request and goes on with it, so the
generation runs and is billed although the client got an HTML error page (openrouter-api.md
§2.2 lists 524 among the retryable statuses; design §5: "the provider bills generations the
client gave up on"). batchroute booked a 524 at $0 as a refusal before any generation, then
sent the call again: the database said less than the bill.

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
from test_billing_standin import MODEL, StandIn

N = 6
CLOUDFLARE_524 = (
    b"<!DOCTYPE html><html><head><title>openrouter.ai | 524: A timeout occurred</title></head>"
    b"<body>The origin web server timed out responding to this request.</body></html>"
)


@dataclass
class EdgeTimeout(StandIn):
    """The origin bills each generation; every third call reaches the client as a Cloudflare
    524 page instead of the answer."""

    calls: int = 0
    timeouts: int = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self._bill(body, "ok")  # the origin ran it: billed, whatever the edge answers
        self.calls += 1
        if self.calls % 3 == 1:
            self.timeouts += 1
            return web.Response(status=524, body=CLOUDFLARE_524, content_type="text/html")
        self.billed.pop()  # the answer below bills itself again through super()
        self.generations.popitem()
        return await super().chat(request)


async def test_a_524_is_booked_as_a_call_that_may_have_been_billed(
    tmp_path: Path, serve: Any
) -> None:
    """Before: 9 calls, every third a 524: billed $0.0112, the database said $0.0075 (the
    three 524s at $0)."""
    standin = EdgeTimeout("ok")
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(
        tmp_path, quality=[], endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV}
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": False}}
    job["limits"] = {**job["limits"], "max_attempts": 3, "concurrency": 1}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(path))
    assert code == 0, err
    assert standin.timeouts > 0, "no 524: the test proves nothing"
    assert len(standin.billed) == N + standin.timeouts
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    results = query(db, "SELECT sum(cost_usd) FROM results")[0][0]
    assert attempts >= standin.total, (attempts, standin.total)
    assert results == attempts
