"""A short local token is not scrubbed out of streamed answers (money3).

A local gateway's token may be a word: "EMPTY" is vLLM's convention. Bodies are cleaned only of
keys of 12 characters or more (`errors.keep_secret`: a shorter one cannot be told from text),
so a plain answer saying "EMPTY" was stored as said; a streamed one was not: the joined
content went through `without_secrets`, which cleans every registered key, and the answer was
stored as "The box is [redacted key]." The same answer must be stored whatever the transport.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import subprocs
import yaml
from aiohttp import web
from factories import job_dict, texts, write_jsonl
from subprocs import query, run_cli_async
from test_billing_standin import MODEL, StandIn

KEY = "EMPTY"
KEY_ENV = "AUDIT_SHORT_KEY"
SAID = "The box is EMPTY."


@dataclass
class SaysEmpty(StandIn):
    """Answers SAID, plainly or streamed."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        gid, usage = self._bill(body, "ok")
        if not body.get("stream"):
            answer = {"id": gid, "model": body["model"], "usage": usage, "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"content": SAID}}]}  # fmt: skip
            return web.json_response(answer, headers={"X-Generation-Id": gid})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in (
            {"id": gid, "choices": [{"index": 0, "delta": {"content": "The box is EM"}}]},
            {
                "id": gid,
                "choices": [{"index": 0, "delta": {"content": "PTY."}, "finish_reason": "stop"}],
            },
            {"id": gid, "choices": [], "usage": usage},
        ):
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.mark.parametrize("stream", [False, True])
async def test_a_short_token_leaves_answers_as_said(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """Before: streamed, 3 paid answers stored as "The box is [redacted key]."; plain, as
    said."""
    monkeypatch.setitem(subprocs.ENV, KEY_ENV, KEY)
    standin = SaysEmpty("ok")
    write_jsonl(tmp_path / "in.jsonl", texts(3))
    job = job_dict(
        tmp_path, quality=[], endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV}
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": stream}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, err = await run_cli_async("run", str(path))
    assert code == 0, err
    rows = query(tmp_path / "results.duckdb", "SELECT DISTINCT status, output FROM results")
    assert rows == [("done", SAID)], rows
