"""A disk that fills up mid-run: what was paid must still reach the database (audit4).

Every row reaches DuckDB only through `<db>.journal` (the writer process applies its
segments). A row is appended to `Journal._pending` and written once per loop step
(`call_soon`); when that write fails (ENOSPC), `Journal.sync` has already taken the rows out of
`_pending`: they are dropped, a partial line may be left on disk, and the error is kept to be
raised at a later append. Meanwhile the calls whose in-flight marks were in that write have
gone out: paid, in no journal, in no database. A night where the disk fills and is freed the
next morning should end, after the next run, with the database holding at least the bill: a
call the run cannot mark as in flight must not be sent (the calls already marked are replayed
as `killed` at their reservation).

Real parts: the real CLI in subprocesses, a stand-in on a loopback port, a real DuckDB file on a
real, small tmpfs mounted in a private mount namespace (`unshare --mount`, needs root), filled
through `/proc/<pid>/root` while calls are held, then freed for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from factories import standin_job, texts
from subprocs import ENV, WAIT_S, query, until
from test_billing_standin import MODEL, StandIn

N = 40
CONCURRENCY = 4
ANSWERED_FIRST = 8  # calls answered before the disk fills


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, check=False,
    )  # fmt: skip
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount(), reason="needs root and unshare --mount")


@dataclass
class Gated(StandIn):
    """Answers the first `ANSWERED_FIRST` calls at once; later calls wait at `gate` (the
    generation is billed when it is answered)."""

    arrived: int = 0
    held: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        if self.arrived > ANSWERED_FIRST and not self.gate.is_set():
            self.held += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.wait(), timeout=WAIT_S)
            self.held -= 1
        return await super().chat(request)


def _fill(folder: Path) -> Path:
    """Write zeros into `folder` until its filesystem says ENOSPC; the filler's path."""
    filler = folder / "filler"
    block = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, block)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    with contextlib.suppress(OSError), open(filler, "ab") as fh:  # the last few bytes too
        while True:
            fh.write(b"\0")
            fh.flush()
    return filler


async def test_rows_of_a_failed_journal_write_reach_the_database_once_space_is_back(
    tmp_path: Path, serve: Any
) -> None:
    """Before (14f3717), 4 of 4 tries: 48 calls billed $0.060294 for 40 records, the database
    $0.057658 after run 2. Run 1 (exit 1, "unexpected error (OSError: [Errno 28] ...)", after
    saying "every result is kept in ...journal") lost 4 paid calls whole: the held wave's
    answers landed after the fill, the freed slots sent 4 more calls in the same loop step,
    and the one write holding all their rows (in-flight marks included) failed and was
    dropped; run 2 paid those records again. (The 4 held calls' in-flight marks were on disk:
    replayed as `killed` at their reservation.)"""
    standin, host, rc1, rc2 = await night(tmp_path, serve)
    db = host / "out" / "results.duckdb"
    booked = query(db, "SELECT COALESCE(sum(cost_usd), 0) FROM attempts")[0][0]
    done = query(db, "SELECT count(*) FROM results WHERE status = 'done'")[0][0]
    calls = len(standin.billed)
    assert rc2 == "0", (host / "out2").read_text()
    assert done == N
    assert booked >= standin.total, (
        f"bill ${standin.total} for {calls} calls ({N} records) vs database ${booked}; "
        f"run 1 exit {rc1}, run 2 exit {rc2}; run 1 said: {(host / 'out1').read_text()[-600:]}"
    )


async def night(tmp_path: Path, serve: Any) -> tuple[Gated, Path, str, str]:
    """A job's first run on a 32 MiB tmpfs filled while its second wave is held, then a
    second run once space is back: (the stand-in, the host folder with each run's output in
    `out1`/`out2` and the database files copied to `out/`, run 1's and run 2's exit codes)."""
    standin = Gated("ok")
    disk, host = tmp_path / "disk", tmp_path / "host"
    disk.mkdir()
    (host / "out").mkdir(parents=True)
    go = host / "go"
    os.mkfifo(go)
    job = standin_job(
        tmp_path,
        await serve(standin),
        model=MODEL,
        cap=10,
        records=texts(N),
        limits={"concurrency": CONCURRENCY, "reconcile_wait_s": 5},
        output={"database": str(disk / "results.duckdb"), "busy_timeout_s": 5},
    )
    run = f'"{sys.executable}" -m batchroute run "{job}"'
    script = (
        f'mount -t tmpfs -o size=32m tmpfs "{disk}" || exit 99\n'
        f'touch "{host}/mounted"\n'
        f'{run} > "{host}/out1" 2>&1; echo $? > "{host}/rc1"\n'
        f'read _ < "{go}"\n'
        f'{run} > "{host}/out2" 2>&1; echo $? > "{host}/rc2"\n'
        f'cp "{disk}"/results.duckdb* "{host}/out/"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script, env=ENV,
        start_new_session=True,  # its own group: a failure below kills the runs with it
    )  # fmt: skip
    try:
        await until(lambda: (host / "mounted").exists() or proc.returncode is not None, "mount")
        inside = Path(f"/proc/{proc.pid}/root") / disk.relative_to("/")
        await until(lambda: standin.held == CONCURRENCY, "the held wave")
        filler = _fill(inside)  # the disk is full while the held calls are answered
        standin.gate.set()
        await until(lambda: (host / "rc1").exists(), "the first run's end")
        await until(lambda: (host / "rc1").read_text().strip() != "", "the first run's code")
        filler.unlink()  # the morning: space is back
        await asyncio.to_thread(go.write_text, "\n")  # the fifo the script reads: run 2
        await asyncio.wait_for(proc.wait(), timeout=WAIT_S * 2)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    rc1, rc2 = (host / "rc1").read_text().strip(), (host / "rc2").read_text().strip()
    return standin, host, rc1, rc2
