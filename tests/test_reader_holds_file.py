"""A reader (an SQL client, `batchroute report`) holds the DuckDB file while a run calls.

Design §7: the run only journals; its writer process commits, and waits while a reader holds
the file. The run itself must keep every call slot busy meanwhile, and a kill -9 then leaves
the answers in the journal only: the dry run and the next run count them the same.

Real processes: the CLI, a reader process holding the file, real DuckDB files. The simulator
runs in this process (on a real loopback port) so that its sleep is a `Gate`: an answer comes
only when the test lets it, never after a timed wait.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from factories import texts, write_job, write_jsonl
from subprocs import KEY_ENV, query, reaped, run_cli, spawn_run, wait_until

from batchroute.journal import journal_files, journal_path
from batchroute.simulator import Scenario, SimulatorThread
from batchroute.usd import usd

CONCURRENCY = 8
LIMITS = {"concurrency": CONCURRENCY, "requests_per_minute": None, "timeout_s": 3600}
REQUEST = {"max_tokens": 2048}  # no finish_length escalation: one billed call per record
HELD_MS = 3_600_000  # a scripted latency this long: the call is never answered


class Gate:
    """The simulator's injected sleep, awaited on its loop for every answer's latency.

    No answer comes before `open()`. Then answers go in waves of `width`: each waits until
    `width` calls wait together, so a run that keeps fewer calls open stops getting answers
    (and the test's wait times out). A call scripted with HELD_MS is never answered; `held`
    counts those that came.
    """

    def __init__(self, width: int = 1) -> None:
        self.width = width
        self.held = 0
        self._waiting: list[asyncio.Future[None]] = []
        self._opened = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, seconds: float) -> None:
        loop = self._loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if seconds * 1000 >= HELD_MS:
            self.held += 1
        else:
            self._waiting.append(waiter)
            self._release()
        await waiter  # a held call waits until the simulator stops (its handler is cancelled)

    def _release(self) -> None:
        while self._opened and len(self._waiting) >= self.width:
            wave, self._waiting = self._waiting[: self.width], self._waiting[self.width :]
            for waiter in wave:
                if not waiter.done():
                    waiter.set_result(None)

    def open(self) -> None:
        """Let the answers go (from the test's thread; calls must be waiting already)."""
        assert self._loop is not None, "no call came to the gate yet"

        def now_open() -> None:
            self._opened = True
            self._release()

        self._loop.call_soon_threadsafe(now_open)


# The reader: duckdb imported first ("ready"), then the file taken at "go" as soon as the run's
# writer process lets go of it ("held"), and kept until stdin closes.
HOLD = """
import sys, duckdb
print("ready", flush=True)
sys.stdin.readline()
while True:
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        pass
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def reader_ready(db: Path) -> Iterator[subprocess.Popen[str]]:
    """The reader process, duckdb imported; `hold` makes it take the file."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline() == "ready\n"
            yield holder
        finally:
            holder.stdin.close()  # the reader lets go of the file and ends
            holder.kill()  # a reader stuck retrying (the test failed before the hold)


def hold(holder: subprocess.Popen[str]) -> None:
    """Make the reader take the file; returns once it holds it."""
    assert holder.stdin is not None
    assert holder.stdout is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.stdout.readline() == "held\n"


def let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=60)


def _job(tmp_path: Path, sim: SimulatorThread, n: int) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    endpoint = {"base_url": sim.base_url, "api_key_env": KEY_ENV}
    return write_job(tmp_path, endpoint=endpoint, limits=LIMITS, request=REQUEST)


def _calls(sim: SimulatorThread) -> int:
    return int(sim.ledger()["calls"])  # answered (billed) calls: a call in flight is not yet


def _in_flight(sim: SimulatorThread) -> int:
    return int(sim.ledger()["in_flight"])


def test_a_reader_holding_the_file_for_the_whole_run_never_slows_its_calls(tmp_path: Path) -> None:
    """The reader takes the file once the run's first CONCURRENCY calls are out (the run's
    start-up reads are done), and holds it while the run makes every call: answers come in
    waves of CONCURRENCY, so each wave needs every slot busy. Once the reader lets go the
    writer process commits everything and the run ends well."""
    n = 8 * CONCURRENCY
    gate = Gate(width=CONCURRENCY)
    with SimulatorThread(Scenario(latency_ms=1), sleep=gate) as sim:
        job = _job(tmp_path, sim, n)
        db = tmp_path / "results.duckdb"
        with reader_ready(db) as holder, reaped(spawn_run(job)) as proc:
            wait_until(
                lambda: _in_flight(sim) >= CONCURRENCY or proc.poll() is not None,
                "the run's first calls",
            )
            assert proc.poll() is None, "the run ended early"
            hold(holder)
            gate.open()
            wait_until(lambda: _calls(sim) >= n or proc.poll() is not None, "every call")
            assert proc.poll() is None  # it cannot end before its rows are committed
            let_go(holder)
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert _calls(sim) == n
    assert query(db, "SELECT status, count(*) FROM results GROUP BY ALL") == [("done", n)]


def test_answers_only_journaled_under_a_reader_are_what_the_dry_run_and_the_rerun_count(
    tmp_path: Path,
) -> None:
    """A run killed with -9 while a reader held the file: FAST answers journaled and none
    committed, CONCURRENCY calls in flight. The dry run's counts and today's spend are those
    of the run that follows, which replays the journal first; the dry run writes nothing.

    The reader takes the file before any answer exists (the gate is shut until it holds it),
    so nothing the run answered can be committed, however loaded the machine. The held calls
    are calls FAST+1 … FAST+CONCURRENCY: the run sends one only once a slot's earlier record
    is done and journaled, so when CONCURRENCY of them are out, all FAST answers are in the
    run's journal."""
    n, fast = 40, 10
    gate = Gate()
    answered, held = {"fault": "ok", "latency_ms": 1}, {"fault": "ok", "latency_ms": HELD_MS}
    script = [answered] * fast + [held] * n
    scenario = Scenario.model_validate({"script": {"openai/gpt-4o-mini": script}})
    with SimulatorThread(scenario, sleep=gate) as sim:
        job = _job(tmp_path, sim, n)
        db = tmp_path / "results.duckdb"
        with reader_ready(db) as holder, reaped(spawn_run(job)) as proc:
            wait_until(
                lambda: _in_flight(sim) >= CONCURRENCY or proc.poll() is not None,
                "the run's first calls",
            )
            assert proc.poll() is None, "the run ended early"
            hold(holder)
            gate.open()
            wait_until(lambda: gate.held >= CONCURRENCY or proc.poll() is not None, "held calls")
            assert proc.poll() is None, "the run ended early"
            assert _calls(sim) == fast  # the held calls are not answered (nor billed)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            let_go(holder)
        sim.set_scenario(Scenario())
        assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(0,)]
        attempts = query(db, "SELECT count(*) FROM attempts")
        segments = journal_files(journal_path(db))
        dry = run_cli("run", str(job), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert journal_files(journal_path(db)) == segments != []  # left for the run to replay
        assert query(db, "SELECT count(*) FROM attempts") == attempts  # the dry run wrote none
        run = run_cli("run", str(job))
        assert run.returncode == 0, run.stderr

    said = json.loads(dry.stdout)
    m = re.search(r"this input: \d+ records, (\d+) already final", run.stderr)
    assert m is not None, run.stderr
    assert int(m.group(1)) == fast  # the run replayed the journal: the answered records
    assert said["skipped_already_final"] == fast
    assert said["records"] == n - fast
    spend = re.search(r"today's spend (\$[0-9.]+) of", run.stderr)
    assert spend is not None, run.stderr
    # the answers at their cost and the calls killed in flight at their reservation
    assert usd(Decimal(said["spent_today_usd"])) == spend.group(1) != "$0.00"
    assert query(db, "SELECT status, count(*) FROM results GROUP BY ALL") == [("done", n)]
    killed = query(db, "SELECT count(*) FROM attempts WHERE outcome = 'killed'")
    assert killed == [(CONCURRENCY,)]
