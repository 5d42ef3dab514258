"""Running the simulator: `serve()` for the CLI, `SimulatorThread` for tests and benchmarks.

Loopback only by default; no state of its own beyond the app (see `app.py`).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from aiohttp import web

from batchroute.simulator.app import create_app
from batchroute.simulator.scenario import Scenario
from batchroute.simulator.state import SIM_STATE, Clock, Sleep

_SHUTDOWN_TIMEOUT_S = 0.2  # hung handlers (rate_hang) are cancelled rather than awaited


def _base_url(runner: web.AppRunner, host: str) -> str:
    port = runner.addresses[0][1]
    return f"http://{host}:{port}/api/v1"


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner, _base_url(runner, host)


async def serve(
    host: str,
    port: int,
    scenario: Scenario,
    *,
    seed: int = 0,
    on_ready: Callable[[str], None] | None = None,
    handle_signals: bool = False,
) -> None:
    """Serve the simulator until cancelled, or until SIGINT/SIGTERM with `handle_signals`;
    `on_ready(base_url)` is called once listening.

    The signals are handled here rather than left to `asyncio.run`'s KeyboardInterrupt: that
    one is not installed when the process started with SIGINT ignored (any `cmd &` of a
    non-interactive shell), and a blocked signal inherited from the parent would never come.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    if sigs:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    runner, base_url = await _start(create_app(scenario, seed=seed), host, port)
    try:
        if on_ready is not None:
            on_ready(base_url)
        await stop.wait()
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
        await runner.cleanup()


class SimulatorThread:
    """The simulator on its own event loop in a background thread (port 0 = a free port).

    Use as a context manager; `base_url` is "http://127.0.0.1:PORT/api/v1". `clock` and
    `sleep` are injected as in `create_app` (`sleep` is awaited on the simulator's loop).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.app = create_app(scenario, seed=seed, clock=clock, sleep=sleep)
        self.host = host
        self.port = port
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready: Future[str] = Future()

    def start(self) -> SimulatorThread:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="batchroute-sim", daemon=True)
        self._thread.start()
        self.base_url = self._ready.result(timeout=10)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (in-flight handlers are cancelled)."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            runner, base_url = await _start(self.app, self.host, self.port)
        except OSError as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(base_url)
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the simulator's loop (state is only touched from there)."""
        assert self._loop is not None, "SimulatorThread is not running"

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=5)

    def ledger(self) -> dict[str, Any]:
        """Same content as GET /sim/ledger."""
        result: dict[str, Any] = self._call(self.app[SIM_STATE].ledger)
        return result

    def set_scenario(self, scenario: Scenario) -> None:
        """Replace the scenario of the running simulator (scripts restart)."""
        self._call(lambda: self.app[SIM_STATE].set_scenario(scenario))

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (as POST /sim/advance): batches progress."""
        self._call(lambda: self.app[SIM_STATE].advance(seconds))

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
