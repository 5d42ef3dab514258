"""Issue 9, cron: a progress line at least once a minute without a TTY, and a README crontab
line that works under cron's bare environment.

The heartbeat is tested with an injected monotonic clock (no minute-long waits); the crontab
line is parsed out of README.md and run under `env -i` with a minimal PATH, as cron would.
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb

from batchroute.progress import LOG_EVERY_S, MIN_WIDTH, Progress
from batchroute.types import RecordStatus, RunCounts

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
WAIT_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _progress(
    clock: Clock, *, bars: bool = False, quiet: bool = False, width: int = 0
) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    p = Progress(["mid"], bars=bars, quiet=quiet, stream=out, monotonic=clock, width=lambda: width)
    return p, out


def _lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.startswith("progress:")]


# --- the heartbeat ------------------------------------------------------------------------------


def test_a_heartbeat_prints_a_line_each_minute_when_nothing_else_does() -> None:
    """The feeder calls `tick` every 128 records; blocked on a full queue (or with every record
    waiting for the budget or a cooled-down model) it never does: the heartbeat still prints."""
    clock = Clock()
    p, out = _progress(clock)
    counts = RunCounts(seen=300, done=120, failed=2, pending=7, cost_usd=Decimal("0.0123"))
    clock.now += LOG_EVERY_S - 1
    p.heartbeat(counts)
    assert _lines(out) == []
    clock.now += 1
    p.heartbeat(counts)
    assert len(_lines(out)) == 1
    line = _lines(out)[0]
    for part in ("120 done", "2 failed", "7 pending", "300 read", "$0.0123 spent"):
        assert part in line, line
    clock.now += 30
    p.heartbeat(counts)
    assert len(_lines(out)) == 1  # at most once a minute
    clock.now += 30
    p.heartbeat(counts)
    assert len(_lines(out)) == 2


def test_tick_and_heartbeat_share_one_timer() -> None:
    clock = Clock()
    p, out = _progress(clock)
    clock.now += LOG_EVERY_S
    p.tick(RunCounts())
    assert len(_lines(out)) == 1
    clock.now += LOG_EVERY_S / 2
    p.heartbeat(RunCounts())
    assert len(_lines(out)) == 1
    assert p.due_in() == LOG_EVERY_S / 2


def test_no_heartbeat_lines_with_bars_or_quiet() -> None:
    for kw in ({"quiet": True}, {"bars": True, "width": 80}):
        clock = Clock()
        p, out = _progress(clock, **kw)
        clock.now += 10 * LOG_EVERY_S
        p.heartbeat(RunCounts())
        p.close()
        assert _lines(out) == [], kw


def test_a_terminal_too_narrow_for_bars_gets_the_cron_lines() -> None:
    """A terminal of 0 columns (some CI consoles, `stty cols 0`) or a narrow one: no block of
    bars (it would be blank or wrapped lines), the lines a minute instead."""
    for width in (0, MIN_WIDTH - 1):
        clock = Clock()
        p, out = _progress(clock, bars=True, width=width)
        p.record("mid", RecordStatus.DONE, Decimal("0.01"))
        clock.now += LOG_EVERY_S
        assert p.heartbeat(RunCounts(done=1))
        p.close()
        assert "\x1b" not in out.getvalue(), width
        assert len(_lines(out)) == 1, width


async def test_keep_alive_prints_while_the_run_is_stuck_and_stops_when_it_is_done() -> None:
    clock = Clock()
    p, out = _progress(clock)
    counts = RunCounts()
    done = asyncio.Event()
    task = asyncio.create_task(p.keep_alive(lambda: counts, done, max_wait_s=0.01))
    counts.done = 5
    clock.now += LOG_EVERY_S  # a minute passes; nothing calls tick
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not _lines(out):
        assert asyncio.get_running_loop().time() < deadline, "no heartbeat line"
        await asyncio.sleep(0.005)
    assert "5 done" in _lines(out)[0]
    done.set()
    await asyncio.wait_for(task, WAIT_S)
    assert len(_lines(out)) == 1


# --- the README's crontab line ------------------------------------------------------------------


def _crontab_line() -> str:
    (block,) = re.findall(r"```cron\n(.*?)```", README, flags=re.S)
    (line,) = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    return line


def test_the_readme_crontab_line_is_cron_safe() -> None:
    line = _crontab_line()
    fields = line.split(None, 5)
    assert len(fields) == 6, line
    command = fields[5]
    assert "%" not in command  # cron turns % into newlines
    exe = re.search(r"(\S*/bin/batchroute)\s+run\b", command)
    assert exe, "batchroute must be named by an absolute path to the venv's bin/"
    assert exe.group(1).startswith("/"), "batchroute must be named by an absolute path"
    assert re.search(r"(^|&&|;)\s*\. \S+\.env\b", command), "the key comes from an env file"
    assert "mkdir -p" in command, "the log folder must exist"


def test_the_readme_crontab_line_runs_under_a_bare_environment(tmp_path: Path) -> None:
    """The line exactly as the README has it, under `env -i` with cron's PATH, with the README's
    folder and venv replaced by a temp folder and this venv, plus `--simulate` (no real key)."""
    fields = _crontab_line().split(None, 5)
    command = fields[5]
    (venv_exe,) = re.findall(r"(/\S*/bin/batchroute)\b", command)
    (home,) = re.findall(r"\bcd (/\S+)", command)
    script = Path(sys.executable).parent / "batchroute"
    assert script.exists(), "the venv has no batchroute console script (pip install -e .)"
    (tmp_path / "jobs").mkdir()
    shutil.copy(ROOT / "jobs" / "translate.yaml", tmp_path / "jobs" / "translate.yaml")
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    env_file = re.search(r"\. (\S+\.env)\b", command)
    assert env_file
    env_path = Path(env_file.group(1).replace(home, str(tmp_path)))
    if not env_path.is_absolute():
        env_path = tmp_path / env_path
    env_path.write_text("export OPENROUTER_API_KEY=sk-or-v1-not-used-with-simulate\n")
    env_path.chmod(0o600)
    command = command.replace(venv_exe, str(script)).replace(home, str(tmp_path))
    command = re.sub(r"(batchroute run \S+)", r"\1 --simulate --limit 20", command, count=1)
    assert "--simulate" in command
    assert not (tmp_path / "logs").exists()
    p = subprocess.run(
        [
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            f"HOME={tmp_path}",
            "SHELL=/bin/sh",
            "/bin/sh",
            "-c",
            command,
        ],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    logs = list((tmp_path / "logs").glob("*.log"))
    log_text = logs[0].read_text() if logs else ""
    assert p.returncode == 0, (p.stdout, p.stderr, log_text)
    assert len(logs) == 1, p.stderr
    assert "exit 0" in log_text
    assert "Traceback" not in log_text
    assert not (tmp_path / "results.duckdb").exists()  # --simulate wrote to its own file
    con = duckdb.connect(str(tmp_path / "results.simulated.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM results WHERE status = 'done'").fetchone() == (20,)
    finally:
        con.close()
