"""A function-calling job paid for every answer and stored none of them (audit6).

The job file accepts `extra_body.tools` (type "function" only: `spec/parts.py`), the usual way
to get structured output. The model then answers with `message.tool_calls` (the arguments are
the answer), `content` null and `finish_reason: "tool_calls"` (openrouter-api.md §1.2). The
client reads only `message.content` (`client/parse.py`), so every such answer, billed, is
"empty": with the default quality checks the record climbs every tier, paying each, and ends
`failed`; without the "empty" check it is `done` with output NULL. Either way the paid answer
is thrown away, and a rerun (`--retry-failed`) pays for it again.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import MODEL, StandIn

from batchroute.client.stream import _Stream

N = 3
TOOL = {
    "type": "function",
    "function": {
        "name": "record_translation",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


@dataclass
class ToolCaller(StandIn):
    """Every call with `tools` is answered by a tool call (billed like any answer); `text` is
    the content beside it (null, "" — both possible for tool responses, openrouter-api.md —
    or a sentence before the call)."""

    text: str | None = None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        assert body.get("tools"), body
        gid, usage = self._bill(body, "ok")
        args = orjson.dumps({"text": f"bonjour {len(self.billed)}"}).decode()
        message = {
            "role": "assistant",
            "content": self.text,
            "tool_calls": [
                {
                    "id": f"call_{gid}",
                    "type": "function",
                    "function": {"name": "record_translation", "arguments": args},
                }
            ],
        }
        answer = {
            "id": gid,
            "model": body["model"],
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "native_finish_reason": "tool_use",
                    "message": message,
                }
            ],
            "usage": usage,
        }
        if body.get("stream"):
            return await self._stream_call(request, gid, body["model"], message, usage)
        return web.json_response(answer, headers={"X-Generation-Id": gid})

    async def _stream_call(
        self, request: web.Request, gid: str, model: str, message: dict[str, Any], usage: Any
    ) -> web.StreamResponse:
        """The tool call streamed as OpenAI-style deltas: its arguments in two pieces."""
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Generation-Id": gid}
        )
        await resp.prepare(request)
        call = message["tool_calls"][0]
        args = call["function"]["arguments"]
        head = {"index": 0, "id": call["id"], "type": "function"}
        pieces = [
            {**head, "function": {"name": call["function"]["name"], "arguments": args[:5]}},
            {"index": 0, "function": {"arguments": args[5:]}},
        ]
        first = {"role": "assistant", "content": message["content"]}
        chunks: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": {**(first if i == 0 else {}), "tool_calls": [p]}}]}
            for i, p in enumerate(pieces)
        ]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        chunks.append({"choices": [], "usage": usage})
        for c in chunks:
            data = orjson.dumps({"id": gid, "model": model, **c})
            await resp.write(b"data: " + data + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.mark.parametrize("text", [None, "", "I will record it."])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_answer_is_stored_and_paid_once(
    tmp_path: Path, serve: Any, stream: bool, text: str | None
) -> None:
    """Before (4fb9e65): 3 calls billed, 3 records `failed` ("empty content"), no output;
    streamed, the same today."""
    standin = ToolCaller("ok", text=text)
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(
        tmp_path,
        endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV},
        request={"max_tokens": 256, "extra_body": {"tools": [TOOL], "tool_choice": "required"}},
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": stream}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, err = await run_cli_async("run", str(path))
    db = tmp_path / "results.duckdb"
    rows = query(db, "SELECT status, output FROM results ORDER BY record_key")
    assert len(standin.billed) == N, rows
    assert code == 0, (err, rows)
    assert [s for s, _ in rows] == ["done"] * N
    for _, out in rows:  # the calls, and the sentence before them when there was one
        answer = orjson.loads(out)
        args = orjson.loads(answer["tool_calls"][0]["function"]["arguments"])
        assert args["text"].startswith("bonjour"), answer
        assert answer["content"] == (text or None), answer


def _streamed(*deltas: dict[str, Any]) -> str | None:
    stream = _Stream("m", "gen-1", {})
    for delta in deltas:
        stream.event(orjson.dumps({"choices": [{"index": 0, "delta": delta}]}))
    stream.event(orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return stream.completion().content


def test_parallel_streamed_calls_without_an_index_stay_apart() -> None:
    """Pieces without `index`: a new `id` is a new call (they were merged into one call with
    arguments `{"a":1}{"b":2}`); arguments sent as an object are taken whole."""
    out = _streamed(
        {"tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"a":'}}]},
        {"tool_calls": [{"function": {"arguments": "1}"}}]},
        {"tool_calls": [{"id": "c2", "function": {"name": "g", "arguments": {"b": 2}}}]},
    )
    assert out is not None
    calls = orjson.loads(out)["tool_calls"]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [("c1", "f"), ("c2", "g")]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"a": 1}, {"b": 2}]


def test_indexed_streamed_calls_interleaved_are_assembled_by_index() -> None:
    out = _streamed(
        {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "["}}]},
        {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "]"}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "}"}}]},
    )
    assert out is not None
    calls = orjson.loads(out)["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ["[]", "{}"]
