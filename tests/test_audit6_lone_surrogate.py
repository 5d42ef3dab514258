"""An answer holding half a character was thrown away and paid again (audit6).

JSON's grammar allows any `\\uXXXX` escape, a lone surrogate too (RFC 8259 §8.2 only calls its
meaning unpredictable), and a JavaScript serializer writes one for a string cut inside a
surrogate pair (`JSON.stringify` since ES2019): a model's answer cut in the middle of an emoji.
orjson refuses such a document, so the client called the whole answer malformed: booked at its
reservation, sent again, paid again, and with the same answer every time the record was paid
`max_attempts` times and never stored. openrouter-api.md does not say OpenRouter sends one: the
premise is the JSON grammar's, not an observed capture (a theory with a test, said so). The
same for an answer cut at max_tokens inside a UTF-8 character by a server that cuts bytes (the
body is then not UTF-8 at all).

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from factories import standin_job, texts
from subprocs import query, run_cli_async
from test_billing_standin import MODEL, StandIn

from batchroute.client.parse import loads_lenient

N = 2


@dataclass
class LoneSurrogate(StandIn):
    """Every answer ends in half a character: a lone high surrogate written as JSON's escape
    (`cut`: "escape"), or the first two bytes of a 4-byte UTF-8 character ("bytes": an answer
    cut at max_tokens inside a character, by a server that cuts bytes)."""

    cut: str = "escape"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        gid, usage = self._bill(body, "ok")
        answer = {
            "id": gid,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "CUT"}}],
            "usage": usage,
        }
        half = b"\\ud83d" if self.cut == "escape" else b"\xf0\x9f"
        data = orjson.dumps(answer).replace(b'"CUT"', b'"bonjour ' + half + b'"')
        return web.Response(
            body=data, content_type="application/json", headers={"X-Generation-Id": gid}
        )


@pytest.mark.parametrize("cut", ["escape", "bytes"])
async def test_an_answer_with_half_a_character_is_kept_and_paid_once(
    tmp_path: Path, serve: Any, cut: str
) -> None:
    """Before (4fb9e65): 6 calls billed for 2 records (3 attempts each), none done."""
    standin = LoneSurrogate("ok", cut=cut)
    path = standin_job(
        tmp_path, await serve(standin), model=MODEL, cap=10, records=texts(N),
        limits={"max_attempts": 3},
    )  # fmt: skip
    code, err = await run_cli_async("run", str(path))
    db = tmp_path / "results.duckdb"
    rows = query(db, "SELECT status, output FROM results ORDER BY record_key")
    [(booked,)] = query(db, "SELECT sum(cost_usd) FROM attempts")
    assert booked >= standin.total  # the books hold (reserved, then /generation): only waste
    assert len(standin.billed) == N, rows
    assert code == 0, err
    assert all(s == "done" and o.startswith("bonjour") for s, o in rows), rows


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (rb'{"c": "a\ud83d"}', "a\ufffd"),  # a lone high surrogate
        (rb'{"c": "\udc00b"}', "\ufffdb"),  # a lone low surrogate
        (rb'{"c": "\ud83d\ude00"}', "\U0001f600"),  # a pair: the character, untouched
        (rb'{"c": "a\\ud83d"}', "a\\ud83d"),  # an escaped backslash, then text: untouched
        (rb'{"c": "a\\\ud83d"}', "a\\\ufffd"),  # an escaped backslash, then a lone surrogate
        (b'{"c": "a\xf0\x9f"}', "a\ufffd"),  # bytes cut inside a character
    ],
)
def test_lenient_loads_reads_only_half_characters_as_the_replacement(raw: bytes, want: str) -> None:
    assert loads_lenient(raw) == {"c": want}
    assert orjson.loads(orjson.dumps(loads_lenient(raw))) == {"c": want}  # the journal's way


def test_lenient_loads_still_refuses_what_is_not_json() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads_lenient(b'{"c": "a"')
