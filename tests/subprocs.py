"""Real processes for resume/crash tests: the simulator and the CLI, each in its own process.

Plain helpers (no fixtures): every process started here is killed by its context manager.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from batchroute.lock import lock_path

KEY_ENV = "BATCHROUTE_TEST_KEY"
ENV = {**os.environ, KEY_ENV: "sk-or-v1-test", "PYTHONUNBUFFERED": "1"}
WAIT_S = 60.0  # generous: two shared cores, several suites at once


class Simulator:
    """`batchroute simulate --port 0` in a separate process; the first stdout line is its URL."""

    def __init__(self, proc: subprocess.Popen[str], base_url: str) -> None:
        self.proc = proc
        self.base_url = base_url
        self.root = base_url.removesuffix("/api/v1")

    def ledger(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root + "/sim/ledger", timeout=WAIT_S) as r:
            data: dict[str, Any] = json.load(r)
        return data

    def calls(self) -> int:
        return int(self.ledger()["calls"])

    def in_flight(self) -> int:
        """Chat requests the simulator is answering right now (hanging ones included)."""
        return int(self.ledger()["in_flight"])

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (POST /sim/advance): batches progress at once."""
        req = urllib.request.Request(
            self.root + "/sim/advance",
            data=json.dumps({"seconds": seconds}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=WAIT_S) as r:
            assert r.status == 200

    def set_scenario(self, scenario: dict[str, Any]) -> None:
        req = urllib.request.Request(
            self.root + "/sim/scenario",
            data=json.dumps(scenario).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=WAIT_S) as r:
            assert r.status == 200


@contextmanager
def simulator(*args: str) -> Iterator[Simulator]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchroute", "simulate", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield Simulator(proc, url)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def job_endpoint(sim: Simulator) -> dict[str, str]:
    """The `endpoint` section of a job pointed at `sim`, with the test key's env var."""
    return {"base_url": sim.base_url, "api_key_env": KEY_ENV}


def spawn_run(job: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`batchroute run JOB` as a child with pipes (no TTY, like cron); `env` adds variables."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchroute", "run", str(job), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, **(env or {})},
    )


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchroute", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        check=False,
    )


async def run_cli_async(*args: str) -> tuple[int, str]:
    """The real CLI in a subprocess without blocking the event loop (a stand-in server on this
    test's loop keeps serving): (exit code, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchroute", *args, env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=WAIT_S * 2)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def until(pred: Any, what: str, timeout: float = WAIT_S, poll: float = 0.02) -> None:
    """`wait_until` for a test on the event loop: a stand-in server on it keeps serving."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


async def kill_run_when(job: Path, moment: Callable[[], Awaitable[None]]) -> None:
    """Start `batchroute run JOB`, await `moment()` (which waits with a deadline for what the
    test chose), then SIGKILL the run: the kill -9 of a bad night."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchroute", "run", str(job), env=ENV,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await moment()
        proc.kill()
        await asyncio.wait_for(proc.wait(), timeout=WAIT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def rerun_after_kill(job: Path) -> tuple[int, str]:
    """The next `batchroute run JOB` once a killed run's writer has let the file go (exit 5:
    the dead run's writer process still holds it for a moment)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        code, err = await run_cli_async("run", str(job))
        if code != 5 or time.monotonic() > deadline:
            return code, err
        await asyncio.sleep(0.1)


def wait_holding_lock(proc: subprocess.Popen[str], db: Path) -> None:
    """Wait until `proc` holds the run lock (its PID is in the lock file): the run has begun."""
    path, deadline = lock_path(db), time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run exited early with {proc.returncode}")
        try:
            if path.read_text().split()[:1] == [str(proc.pid)]:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError("the run never took the lock")


def wait_until(pred: Any, what: str, timeout: float = WAIT_S, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


class Lines:
    """A child's text stream read line by line by a thread, so a test can wait (with a deadline)
    for a line to appear and still get the whole text once the child has exited."""

    def __init__(self, stream: Any) -> None:
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._lines.append(line)

    def wait_for(self, text: str, timeout: float = WAIT_S) -> None:
        wait_until(lambda: any(text in ln for ln in list(self._lines)), repr(text), timeout)

    def text(self, timeout: float = WAIT_S) -> str:
        """Everything the stream carried, once it is closed (the child has exited)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream was never closed"
        return "".join(self._lines)


@contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Kill the child on the way out, whatever happened."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def check_integrity(db: Path) -> dict[str, int]:
    """Open the file read-write, read every row of every table and view (DuckDB verifies block
    checksums on read), and CHECKPOINT; returns the row count per relation."""
    con = duckdb.connect(str(db))
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        ]
        counts = {}
        for name in names:
            rows = con.execute(f'SELECT * FROM "{name}"').fetchall()
            (n,) = con.execute(f'SELECT count(*) FROM "{name}"').fetchone() or (0,)
            assert n == len(rows), name
            counts[name] = n
        con.execute("CHECKPOINT")
        return counts
    finally:
        con.close()
