"""The API key stays out of the database and the logs when the endpoint echoes it (audit).

`endpoint.base_url` may point at a gateway or proxy in front of OpenRouter, and such servers
echo the credential they refused or the request they forwarded: a proxy's 401 "Invalid proxy
server token passed. Received API Key = sk-…", an upstream error whose `metadata.raw` is the
request as the provider saw it. batchroute stored error text as it came (`attempts` and
`results.error_message`) and printed the fatal error on stderr, so the key reached both.

Real CLI in a subprocess against a stand-in on a loopback port; every text cell of every table
of the DuckDB file, and stderr, are searched for the key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import subprocs
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from factories import job_dict, texts, write_jsonl
from subprocs import run_cli_async
from test_billing_standin import COMPLETION_PRICE, MODEL, PROMPT_PRICE

from batchroute.errors import REDACTED, RetryableError, keep_secret

KEY = "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab"
KEY_ENV = "AUDIT_ECHO_KEY"


def _echo(mode: str) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ")
        if mode == "401":
            msg = (
                f"Authentication Error, Invalid proxy server token passed. Received API Key = {key}"
            )
            return web.json_response({"error": {"code": 401, "message": msg}}, status=401)
        raw = f"upstream refused the forwarded request (Authorization: {auth}; model {MODEL})"
        err = {"code": 400, "message": "Provider returned error",
               "metadata": {"raw": raw, "provider_name": "Echo"}}  # fmt: skip
        if mode == "400":
            return web.json_response({"error": err}, status=400)
        # mode "200": the same error inside a 200 body, after the generation began
        body = {"id": "gen-echo", "model": MODEL, "error": err, "choices": []}
        return web.json_response(body)

    async def models(_: web.Request) -> web.Response:
        prices = {"prompt": str(PROMPT_PRICE), "completion": str(COMPLETION_PRICE)}
        m = {"id": MODEL, "context_length": 128_000, "pricing": prices}
        return web.json_response({"data": [m]})

    async def key(_: web.Request) -> web.Response:
        return web.json_response({"data": {"limit": None, "limit_remaining": None}})

    async def generation(_: web.Request) -> web.Response:
        return web.json_response({"error": {"code": 404, "message": "not found"}}, status=404)

    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", chat)
    app.router.add_get("/api/v1/models", models)
    app.router.add_get("/api/v1/key", key)
    app.router.add_get("/api/v1/generation", generation)
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def start(mode: str) -> str:
        server = TestServer(_echo(mode), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/api/v1"))

    yield start
    for server in servers:
        await server.close()


def _cells(db: Path) -> list[str]:
    """Every value of every table of the file, as text."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
        ).fetchall()]  # fmt: skip
        out: list[str] = []
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"').fetchall():
                out += [str(v) for v in row if v is not None]
        return out
    finally:
        con.close()


@pytest.mark.parametrize("mode", ["401", "400", "200"])
async def test_an_echoed_key_reaches_neither_the_database_nor_stderr(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Before: the 401 put the key on stderr and in `attempts.error_message`; the 400 and the
    error inside a 200 put it (in the provider's raw text) in `attempts` and `results`."""
    monkeypatch.setitem(subprocs.ENV, KEY_ENV, KEY)
    write_jsonl(tmp_path / "in.jsonl", texts(3))
    job = job_dict(
        tmp_path, quality=[], endpoint={"base_url": await serve(mode), "api_key_env": KEY_ENV}
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": False}}
    job["limits"] = {**job["limits"], "max_attempts": 1, "reconcile_wait_s": 0}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, err = await run_cli_async("run", str(path))
    assert code in (2, 4, 6), err
    cells = _cells(tmp_path / "results.duckdb")
    assert any("Received API Key" in c or "Authorization" in c for c in cells), (
        "the echoed text never reached the database: the test proves nothing"
    )
    assert KEY not in err
    leaked = [c for c in cells if KEY in c]
    assert not leaked, leaked


def test_a_key_cut_by_truncation_is_redacted_too() -> None:
    """Error text is cut (the provider's raw body at 300 characters, the row at 500): what is
    left of a key at the cut is redacted as well, wherever it stands."""
    keep_secret(KEY)
    for cut in (12, 20, 40, len(KEY) - 1, len(KEY)):
        for text in (f"raw: {KEY[:cut]}", f"raw: {KEY[:cut]}: more", f"{KEY}{KEY[:cut]}"):
            clean = str(RetryableError(text))
            assert KEY[:12] not in clean, (cut, text, clean)
            assert REDACTED in clean
    assert str(RetryableError("sk-or-v1-0 is fine")) == "sk-or-v1-0 is fine"
