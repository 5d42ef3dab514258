"""Shared pytest fixtures. Keep each group under its own banner; add new groups below."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from batchroute.simulator import Scenario, create_app

# ---------------------------------------------------------------------------------------------
# Simulator fixtures: a controllable clock/sleep and a factory of simulator apps on loopback.
# ---------------------------------------------------------------------------------------------

SIM_EPOCH = 1_780_000_000.0  # 2026-05-28T20:26:40Z, a fixed "now" for simulator tests


class FakeClock:
    """Epoch seconds that only move when a test (or FakeSleep) advances them."""

    def __init__(self, start: float = SIM_EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """An injected sleep that returns at once, records the delay and advances the clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(seconds)


SimClientFactory = Callable[..., Awaitable[TestClient[object, Application]]]


@pytest.fixture
def sim_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_sleep(sim_clock: FakeClock) -> FakeSleep:
    return FakeSleep(sim_clock)


@pytest.fixture
async def sim_client(sim_clock: FakeClock, sim_sleep: FakeSleep) -> AsyncIterator[SimClientFactory]:
    """Factory: `await sim_client(scenario, seed=0)` → an aiohttp TestClient on 127.0.0.1.

    The app uses the fixtures' fake clock and sleep; every client is closed after the test.
    """
    clients: list[TestClient[object, Application]] = []

    async def make(
        scenario: Scenario | None = None, *, seed: int = 0
    ) -> TestClient[object, Application]:
        app = create_app(scenario or Scenario(), seed=seed, clock=sim_clock, sleep=sim_sleep)
        client: TestClient[object, Application] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


# ---------------------------------------------------------------------------------------------
# Report fixtures (issue 13): one database made by the real CLI, shared by the report tests.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def flaky_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`batchroute run jobs/mixed.yaml --simulate --scenario flaky` (300 records, a
    native_fallback tier, retries): the database every report test reads."""
    from subprocs import run_cli

    db = tmp_path_factory.mktemp("flaky") / "flaky.duckdb"
    job = Path(__file__).resolve().parents[1] / "jobs" / "mixed.yaml"
    r = run_cli("run", str(job), "--simulate", "--scenario", "flaky", "--db", str(db),
                "--quiet", timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return db


# ---------------------------------------------------------------------------------------------
# Stand-in servers: any stand-in with an `app()` served on a real loopback port.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Any], Awaitable[str]]]:
    """Factory: serve a stand-in (anything with `app()`) on 127.0.0.1; returns its `/api/v1`
    base URL. At teardown a stand-in's `release` event, if it has one, is set first so that
    handlers it holds can end, then every server is closed."""
    servers: list[tuple[Any, TestServer]] = []

    async def start(standin: Any) -> str:
        server = TestServer(standin.app(), host="127.0.0.1")
        await server.start_server()
        servers.append((standin, server))
        return str(server.make_url("/api/v1"))

    yield start
    for standin, server in servers:
        release = getattr(standin, "release", None)
        if isinstance(release, asyncio.Event):
            release.set()
        await server.close()
