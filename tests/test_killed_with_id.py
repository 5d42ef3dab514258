"""A call killed in flight after its generation id arrived is booked at its bill (fix4).

The case of `test_audit4_killed_above.py` that can be mended: the status line and the
`X-Generation-Id` header came before the kill (OpenRouter commits its 200 and keep-alive bytes
before a slow body, openrouter-api.md §2.3; a stream's headers come at once). The run journals
the id the moment the client has it (`Book.identified`), the next run's replay gives it to the
`killed` row, and its reconciliation asks GET /generation: the row holds the bill, 4x list.

Real parts: the real CLI in a subprocess killed with SIGKILL while the stand-in (on a loopback
port) holds its first wave's bodies; the next run replays the journal into the real DuckDB file.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from factories import standin_job, texts
from subprocs import WAIT_S, kill_run_when, query, rerun_after_kill, until
from test_audit4_killed_above import WAVE, HeldUntilKilled
from test_audit_cost_above import PricedAbove

N = 8


@dataclass
class HeadersThenHeld(HeldUntilKilled):
    """The first `WAVE` calls get their status line, `X-Generation-Id` and a keep-alive byte at
    once; their generations run (billed at 4x list) once `gate` opens, client or not."""

    headed: int = 0  # status lines sent

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        if self.arrived > WAVE:
            return await PricedAbove.chat(self, request)
        body = orjson.loads(await request.read())
        gid = f"gen-held-{self.arrived}"
        task = asyncio.ensure_future(self._held(gid, body))  # runs on if the client goes
        self.running.add(task)
        resp = web.StreamResponse(headers={"X-Generation-Id": gid})
        resp.content_type = "application/json"
        with contextlib.suppress(ConnectionError):
            await resp.prepare(request)
            await resp.write(b"\n")
            self.headed += 1
            answer = await asyncio.shield(task)
            await resp.write(answer)
            await resp.write_eof()
        return resp

    async def _held(self, gid: str, body: dict[str, Any]) -> bytes:
        with contextlib.suppress(TimeoutError):
            # longer than the test waits for the ids: the generations never end before the kill
            await asyncio.wait_for(self.gate.wait(), timeout=4 * WAIT_S)
        billed_as, usage = self._bill(body, "ok")
        self.generations[gid] = {**self.generations.pop(billed_as), "id": gid}
        message = {"content": "bonjour"}
        choice = {"index": 0, "finish_reason": "stop", "message": message}
        return orjson.dumps(
            {"id": gid, "model": body["model"], "choices": [choice], "usage": usage}
        )


def _journaled_ids(db: Path) -> set[str]:
    """The held generations' ids in the journal files beside `db` (what a kill leaves)."""
    found: set[str] = set()
    for path in db.parent.glob(db.name + ".journal*"):
        with contextlib.suppress(FileNotFoundError):  # a segment the writer just committed
            text = path.read_bytes()
            found |= {
                f"gen-held-{i}" for i in range(1, WAVE + 1) if f"gen-held-{i}".encode() in text
            }
    return found


async def test_a_call_killed_after_its_id_arrived_is_booked_at_its_bill(
    tmp_path: Path, serve: Any
) -> None:
    """Before (4b1b767): the 4 killed calls booked at their reservations ($0.007401 in all)
    with no generation id against bills of $0.004950-0.005094 each, as in the audit's test."""
    standin = HeadersThenHeld("ok")
    limits = {"concurrency": WAVE, "reconcile_wait_s": 30, "timeout_s": 300}
    job = standin_job(
        tmp_path, await serve(standin), model="example/reasoner", cap=10, records=texts(N),
        limits=limits,
    )  # fmt: skip
    db = tmp_path / "results.duckdb"

    async def ids_out() -> None:
        await until(lambda: standin.headed == WAVE, "the held calls' status lines sent")
        # The client has them once it journaled them; before fix4 it never did: killed anyway.
        with contextlib.suppress(AssertionError):
            await until(lambda: len(_journaled_ids(db)) == WAVE, "the ids journaled")

    await kill_run_when(job, ids_out)
    standin.gate.set()  # the generations run on: billed though nobody reads the answers
    await until(lambda: len(standin.billed) == WAVE, "the killed calls' bills")
    code, err = await rerun_after_kill(job)
    assert code == 0, err
    assert len(standin.billed) == WAVE + N
    killed = query(
        db,
        "SELECT generation_id, cost_usd, cost_source FROM attempts WHERE outcome = 'killed' "
        "ORDER BY generation_id",
    )
    bills = {gid: Decimal(str(g["total_cost"])) for gid, g in standin.generations.items()}
    assert [(g, c, s) for g, c, s in killed] == [
        (f"gen-held-{i}", bills[f"gen-held-{i}"], "generation") for i in range(1, WAVE + 1)
    ]
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total, f"bill ${standin.total} vs database ${booked}"
