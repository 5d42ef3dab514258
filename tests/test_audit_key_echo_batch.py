"""The API key stays out of the database, the journal, stdout and stderr when the batch lane's
endpoints, or a synchronous answer outside its error envelope, echo it (audit, follow-up).

`test_audit_key_echo.py` covered the texts that become an `UpstreamError`. These are the
upstream texts that never did: a batch result line's error (`attempts`, `results`), a failed
batch's `error.message` (`batches.error_message`, and the results of its items), an error's
`metadata.error_type` (`attempts.error_type`), an answer's `provider` (whole or streamed, and
in the journal before the flush), the raw `/models` document (`catalog_cache.raw`, then the
dry run), the `X-Generation-Id` header (`generation_id`). Modes whose text already was an
`UpstreamError` (a refused POST /batches, a failed poll) are kept as the batch lane's own
evidence: no other test covers those calls.

Real CLI in a subprocess against the Batch API stand-in on a loopback port, which echoes the
`Authorization` header it was sent; every text cell of every table of the DuckDB file, every
other file the run left beside it (journal segments, logs), stdout and stderr are searched for
the key and for any 12-character piece of it.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import subprocs
import yaml
from aiohttp import web
from batch_standin import MODEL, BatchStandIn, _error
from factories import job_dict, texts, write_jsonl
from test_audit_key_echo import KEY, KEY_ENV

from batchroute import errors
from batchroute.errors import REDACTED, RetryableError, keep_secret, scrub

HEAD = 12  # errors.py `_SECRET_HEAD`: a piece this long of the key counts as the key
CUT_AT = 500  # a stored error message is cut at 500 characters


def _longest(text: str) -> int:
    """The length of the longest piece of the key in `text`."""
    best = 0
    for i in range(len(KEY)):
        while i + best < len(KEY) and KEY[i : i + best + 1] in text:
            best += 1
    return best


def _pieces(text: str) -> bool:
    """`text` holds a piece of the key at least HEAD characters long."""
    return _longest(text) >= HEAD


@dataclass
class EchoStandIn(BatchStandIn):
    """The Batch API stand-in, echoing the key it is sent in the place `mode` names."""

    mode: str = "item"
    answer_first: int | None = None  # then every chat call hangs until `release`
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def echo(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        return f"upstream refused the forwarded request (Authorization: {auth})"

    async def create(self, request: web.Request) -> web.Response:
        text = self.echo(request)
        if self.mode == "post_401":
            key = request.headers["Authorization"].removeprefix("Bearer ")
            return _error(401, f"Invalid proxy server token passed. Received API Key = {key}")
        if self.mode == "item":  # half the items quote it whole; half are cut inside it
            ids = [r["custom_id"] for r in orjson.loads(await request.read())["requests"]]
            pad = "x" * (CUT_AT - len(text) + len(KEY) // 2)
            self.fail_items = {c: text if i % 2 else pad + text for i, c in enumerate(ids)}
        if self.mode == "batch":
            self.validation_error = text
        return await super().create(request)

    async def get(self, request: web.Request) -> web.Response:
        if self.mode == "poll" and not getattr(self, "_polled", False):
            self._polled = True
            return _error(500, self.echo(request))
        return await super().get(request)

    async def models(self, request: web.Request) -> web.Response:
        if self.mode != "models":
            return await super().models(request)
        doc = orjson.loads((await super().models(request)).body)  # type: ignore[arg-type]
        for m in doc["data"]:  # a gateway's catalogue, saying how it forwards the call
            m["description"] = self.echo(request)
        return web.json_response(doc)

    async def chat(self, request: web.Request) -> web.Response:
        text = self.echo(request)
        if self.mode == "models":
            return await super().chat(request)
        if self.answer_first is not None:
            self.answer_first -= 1
            if self.answer_first < 0:
                await self.release.wait()
        if self.mode == "error_type":
            err = {"code": 400, "message": "Provider returned error",
                   "metadata": {"error_type": text, "provider_name": "Echo"}}  # fmt: skip
            return web.json_response({"error": err}, status=400)
        body = orjson.loads(await request.read())
        answer = {
            "id": "gen-echo-1", "model": body["model"], "provider": text,
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "cost": 0.00001},
        }  # fmt: skip
        choice = {"index": 0, "finish_reason": "stop"}
        if self.mode == "gen_header":  # no id in the body: the header's is the one kept
            del answer["id"]
            answer["provider"] = "Echo"
            answer["choices"] = [{**choice, "message": {"content": "hola"}}]
            return web.json_response(answer, headers={"X-Generation-Id": text})
        if self.mode == "provider":
            answer["choices"] = [{**choice, "message": {"content": "hola"}}]
            return web.json_response(answer)
        # "stream": the provider, in the SSE chunks of a streamed answer
        chunk = {**answer, "choices": [{**choice, "delta": {"content": "hola"}}]}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _cells(db: Path) -> list[tuple[str, str]]:
    """(table.column, value as text) of every cell of every table of the file."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
        ).fetchall()]  # fmt: skip
        out: list[tuple[str, str]] = []
        for t in tables:
            cur = con.execute(f'SELECT * FROM "{t}"')
            names = [f"{t}.{d[0]}" for d in cur.description]
            for row in cur.fetchall():
                out += [(n, str(v)) for n, v in zip(names, row, strict=True) if v is not None]
        return out
    finally:
        con.close()


def _files_left(folder: Path) -> dict[Path, str]:
    """What a run left beside its database (journal segments, logs, crash logs), as text."""
    return {
        f: f.read_bytes().decode("utf-8", "replace")
        for f in folder.iterdir()
        if f.is_file() and f.suffix not in (".duckdb", ".yaml", ".jsonl")
    }


def _journal(folder: Path) -> bytes:
    return b"".join(f.read_bytes() for f in folder.glob("results.duckdb.journal*"))


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchroute", *args, env=subprocs.ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=subprocs.WAIT_S * 2)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


BATCH_MODES = ["item", "batch", "post_401", "poll"]
SYNC_MODES = ["error_type", "provider", "stream", "models", "gen_header"]


@pytest.mark.parametrize("mode", BATCH_MODES + SYNC_MODES)
async def test_an_echoed_key_reaches_no_table_file_or_output(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Before: "item" put the key in `attempts` and `results` (and a 34-character piece of it
    where the message was cut), "batch" in `batches.error_message` and `results`, "error_type"
    in `attempts.error_type`, "provider" and "stream" in `results.provider`, "models" (the raw
    /models document, cached for later runs) in `catalog_cache`."""
    monkeypatch.setitem(subprocs.ENV, KEY_ENV, KEY)
    write_jsonl(tmp_path / "in.jsonl", texts(4))
    url = await serve(EchoStandIn(mode=mode))
    job = job_dict(tmp_path, quality=[], endpoint={"base_url": url, "api_key_env": KEY_ENV})
    tier = {"models": [MODEL], "batch": True} if mode in BATCH_MODES else {"models": [MODEL]}
    job["tiers"] = {"mid": {**tier, "stream": mode == "stream"}}
    job["limits"] = {**job["limits"], "max_attempts": 1, "reconcile_wait_s": 0}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, out, err = await _cli("run", str(path), "--wait")
    assert code in (0, 2, 4, 6), err
    report = await _cli("report", str(tmp_path / "results.duckdb"))
    quote = await _cli("run", str(path), "--dry-run", "--json")  # offline: the cached catalogue
    cells = _cells(tmp_path / "results.duckdb")
    said = " ".join([*(v for _, v in cells), out, err])
    assert "Authorization" in said or "Received API Key" in said, (
        "the echoed text reached neither the database nor the output: the test proves nothing"
    )
    leaked = sorted({f"{col} ({_longest(v)} chars of the key)" for col, v in cells if _pieces(v)})
    assert not leaked, leaked
    outputs = [("stdout", out), ("stderr", err), ("report", report[1] + report[2]),
               ("--dry-run --json", quote[1] + quote[2])]  # fmt: skip
    for name, text in outputs:
        assert not _pieces(text), (name, _longest(text), text[-2000:])
    for f, text in _files_left(tmp_path).items():  # the journal and its segments, logs
        assert not _pieces(text), f


async def test_an_echoed_key_is_not_journaled(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal holds a run's rows before the database does and outlives a kill -9: the
    rows of two answers whose `provider` echoes the key, read while the run still waits for the
    other calls. Before: the key, whole, in the journal."""
    monkeypatch.setitem(subprocs.ENV, KEY_ENV, KEY)
    write_jsonl(tmp_path / "in.jsonl", texts(4))
    url = await serve(EchoStandIn(mode="provider", answer_first=2))
    job = job_dict(tmp_path, quality=[], endpoint={"base_url": url, "api_key_env": KEY_ENV})
    job["tiers"] = {"mid": {"models": [MODEL]}}
    job["limits"] = {**job["limits"], "max_attempts": 1, "timeout_s": 600}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchroute", "run", str(path), env=subprocs.ENV,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    journal = b""
    try:
        deadline = asyncio.get_running_loop().time() + subprocs.WAIT_S
        while journal.count(b"Authorization") < 2:  # both answers' rows are journaled
            assert asyncio.get_running_loop().time() < deadline, journal
            assert proc.returncode is None, "the run ended before its rows were read"
            await asyncio.sleep(0.05)
            journal = _journal(tmp_path)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    text = journal.decode("utf-8", "replace")
    assert not _pieces(text), (_longest(text), text)


def test_scrub_changes_nothing_but_the_key() -> None:
    """The client cleans every body with `scrub` before reading it: a body without the key is
    the same object, and a body with it keeps every other byte (bytes that are not UTF-8 too),
    the key replaced whole and a cut start of it (≥ 12 characters) as well."""
    keep_secret(KEY)
    plain = b'{"choices": [{"message": {"content": "sk-or-v1-0 \xff\xfe"}}]}'
    assert scrub(plain) is plain
    body = b'\xff{"error": "Bearer ' + KEY.encode() + b'", "raw": "' + KEY[:20].encode() + b'"}'
    want = b'\xff{"error": "Bearer ' + REDACTED.encode() + b'", "raw": "' + REDACTED.encode()
    assert scrub(body) == want + b'"}'
    assert orjson.loads(scrub(orjson.dumps({"m": f"key={KEY}"}))) == {"m": f"key={REDACTED}"}


def test_a_short_token_is_not_scrubbed_from_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local gateway's token may be a word ("EMPTY", vLLM's convention): scrubbing it from
    bodies would rewrite the answers that say it. Error messages still drop it."""
    monkeypatch.setattr(errors, "_SECRETS", set())  # no word left registered for later tests
    monkeypatch.setattr(errors, "_HEADS", set())
    keep_secret("EMPTY")
    body = b'{"choices": [{"message": {"content": "The box is EMPTY."}}]}'
    assert scrub(body) == body
    assert str(RetryableError("token EMPTY refused")) == f"token {REDACTED} refused"


@pytest.mark.parametrize("cut", [12, 20, 40, len(KEY) - 1])
def test_a_key_streamed_across_two_deltas_is_redacted_whole(cut: int) -> None:
    """Each SSE event is scrubbed on its own: a first delta holding the key's start (≥ 12
    characters) had it replaced, and the rest of the key in the next delta, which has no start,
    was kept (review: 53 of 73 characters stored in `content`). The joined content is now
    cleaned from the deltas as they were sent."""
    from batchroute.client.stream import _Stream

    keep_secret(KEY)
    sse = _Stream(MODEL, "gen-1", {})
    for piece in ("echo: " + KEY[:cut], KEY[cut:] + " end"):
        delta = {"id": "gen-1", "choices": [{"delta": {"content": piece}}]}
        sse.event(orjson.dumps(delta))
    sse.event(orjson.dumps({"id": "gen-1", "choices": [{"delta": {}, "finish_reason": "stop"}]}))
    content = sse.completion().content
    assert content == f"echo: {REDACTED} end"
    assert KEY[cut:] not in content
