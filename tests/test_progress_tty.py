"""Issue 13: what a person sees at a terminal. The real CLI (`batchroute run JOB --simulate`) runs
in a pseudo-terminal of 0, 40 and 120 columns; everything it writes is read and replayed into a
terminal emulator (pyte), and the test looks at the screen it leaves.

Waits are on conditions with deadlines (the output so far, the child's exit), never fixed sleeps.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyte

from tests.factories import write_job, write_jsonl

WAIT_S = 120.0  # generous: two shared cores, several suites at once
ROWS = 40
ESC = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")
SUMMARY = re.compile(r"(\w+): (\d+) done, (\d+) failed, (\d+) invalid, (\d+) pending")


class Tty:
    """`batchroute ARGS` with stdin, stdout and stderr on a pty of `cols` columns."""

    def __init__(self, cols: int, *args: str, cwd: Path) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, cols, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchroute", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1", "TERM": "xterm"},
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.out = b""

    def read_until(self, done: Callable[[bytes], bool], timeout: float = WAIT_S) -> None:
        """Read what the child writes until `done(everything so far)` or its end (EOF)."""
        deadline = time.monotonic() + timeout
        while not done(self.out):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; the screen so far:\n{self.out[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every copy of the slave is closed, the child is gone
                chunk = b""
            if not chunk:
                return
            self.out += chunk

    def finish(self) -> int:
        """Read to the end and return the exit code."""
        self.read_until(lambda _: False)
        os.close(self.master)
        return self.proc.wait(WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _run(tmp_path: Path, cols: int, *extra: str, interrupt_at: int | None = None) -> Any:
    tty = Tty(cols, "run", "job.yaml", "--simulate", *extra, cwd=tmp_path)
    try:
        if interrupt_at is not None:  # Ctrl-C once this many records are settled on screen
            seen = re.compile(rb"total[^\n]*?\b(\d+)/\d+")
            tty.read_until(
                lambda out: any(int(n) >= interrupt_at for n in seen.findall(ESC.sub(b"", out)))
            )
            tty.proc.send_signal(signal.SIGINT)
        code = tty.finish()
    finally:
        tty.kill()
    return code, tty.out


def _screen(out: bytes, cols: int) -> list[str]:
    """The terminal after all of it, top to bottom (blank lines dropped), each line padded to
    the full width so that joining them joins back what the terminal wrapped."""
    screen = pyte.Screen(cols, 200)  # tall enough that nothing scrolls away
    pyte.ByteStream(screen).feed(out)
    return [line for line in screen.display if line.strip()]


def _summary(lines: list[str]) -> tuple[str, int, int]:
    """(status, done, pending) from the summary line."""
    m = SUMMARY.search("".join(lines))
    assert m, lines
    return m[1], int(m[2]), int(m[5])


def _job(tmp_path: Path, n: int = 60, **overrides: Any) -> None:
    """Two active tiers (budget for classification, mid for translation), two idle ones."""
    records = [
        {"id": f"r{i}", "text": f"Sentence {i} to handle.", "target_lang": "French",
         "task_type": "classification" if i % 3 == 0 else "translation"}
        for i in range(n)
    ]  # fmt: skip
    write_jsonl(tmp_path / "in.jsonl", records)
    write_job(tmp_path, **{"task": None, "task_field": "task_type", **overrides})


def _rows(screen: list[str]) -> dict[str, str]:
    """The progress block's rows by label."""
    rows = {}
    for line in screen:
        m = re.match(r"\s*(total|budget|mid|standard|premium) ", line)
        if m and "/" in line:
            rows[m[1]] = line
    return rows


def test_a_wide_terminal_shows_a_total_a_percentage_and_only_active_tiers(tmp_path: Path) -> None:
    _job(tmp_path)
    code, out = _run(tmp_path, 120)
    assert code == 0, out[-2000:]
    screen = _screen(out, 120)
    rows = _rows(screen)
    assert set(rows) == {"total", "budget", "mid"}, screen  # idle tiers are not drawn
    assert re.search(r"\b60/60\s+100%", rows["total"]), rows
    assert re.search(r"\b20/20\s+100%", rows["budget"]), rows
    assert re.search(r"\b40/40\s+100%", rows["mid"]), rows
    assert "$" in rows["total"]
    assert "rec/s" in rows["total"]
    assert _summary(screen)[:2] == ("completed", 60)
    assert "this input: 60 records, 0 already final (skipped)" in "".join(screen)


def test_a_terminal_of_40_columns_gets_rows_that_fit(tmp_path: Path) -> None:
    _job(tmp_path)
    code, out = _run(tmp_path, 40)
    assert code == 0, out[-2000:]
    # Every row of the block (each ends by clearing the rest of its line) fits in 40 columns;
    # log lines are plain text the terminal wraps as it likes.
    drawn = [ESC.sub(b"", seg).decode() for seg in re.findall(rb"[^\n\r]*\x1b\[K", out)]
    assert drawn, out[-2000:]
    assert max(len(r) for r in drawn) <= 40, drawn
    rows = _rows(_screen(out, 40))
    assert set(rows) == {"total", "budget", "mid"}, rows
    assert re.search(r"\b60/60\s+100%", rows["total"]), rows


def test_a_terminal_of_0_columns_gets_the_cron_lines(tmp_path: Path) -> None:
    """Bars at width 0 were blank lines: now no cursor movement at all, no blank line."""
    _job(tmp_path)
    code, out = _run(tmp_path, 0)
    assert code == 0, out[-2000:]
    assert b"\x1b" not in out
    lines = out.decode().replace("\r\n", "\n").split("\n")
    assert lines[-1] == ""  # the text ends with a line break
    assert all(line.strip() and "\r" not in line for line in lines[:-1]), lines
    assert any(line.startswith("run ") and "60 to send" in line for line in lines), lines
    assert _summary(lines)[:2] == ("completed", 60)


def test_records_left_pending_by_the_budget_are_not_shown_as_done(tmp_path: Path) -> None:
    """The old bar jumped to the input size when the cap stopped the run: every row left
    pending was counted."""
    _job(tmp_path, n=300, task="translation")
    code, out = _run(tmp_path, 120, "--budget", "0.005")
    assert code == 3, out[-2000:]
    screen = _screen(out, 120)
    status, done, pending = _summary(screen)
    assert status == "budget_exhausted"
    assert done < 300
    assert pending == 300 - done
    total = _rows(screen)["total"]
    assert re.search(rf"\b{done}/300\s+{done * 100 // 300}%", total), total
    assert f"{pending} pending" in total


def test_after_ctrl_c_the_bar_stays_where_the_work_stopped(tmp_path: Path) -> None:
    _job(tmp_path, n=300, task="translation", limits={"requests_per_minute": 600})
    code, out = _run(tmp_path, 120, interrupt_at=10)
    assert code == 130, out[-2000:]
    screen = _screen(out, 120)
    status, done, pending = _summary(screen)
    assert status == "interrupted", screen
    assert 10 <= done < 300, screen
    total = _rows(screen)["total"]
    assert re.search(rf"\b{done}/300\b", total), total
    assert pending == 0 or f"{pending} pending" in total


def test_records_already_final_are_said_once_and_not_counted_as_work(tmp_path: Path) -> None:
    """A resume: the start line says how many records are skipped; the bar counts only what
    this run sends (the old bar had no total, so skips and sends could not be told apart)."""
    _job(tmp_path, n=300, task="translation")
    code, out = _run(tmp_path, 120, "--budget", "0.005")
    assert code == 3, out[-2000:]
    _, done, pending = _summary(_screen(out, 120))
    code, out = _run(tmp_path, 120)
    assert code == 0, out[-2000:]
    screen = _screen(out, 120)
    text = "".join(screen)
    assert f"this input: 300 records, {done} already final (skipped)" in text, text
    assert f"{pending} to send" in text, text
    total = _rows(screen)["total"]
    assert re.search(rf"\b{pending}/{pending}\s+100%", total), total
    assert _summary(screen)[:2] == ("completed", pending)


def test_repeated_ids_are_not_work_and_invalid_lines_are_settled(tmp_path: Path) -> None:
    """The total is the input's records less the repeated ids (and those already final); an
    invalid line is settled at once (an `invalid` row), so the bar still reaches 100 %."""
    records: list[dict[str, Any] | str] = [
        {"id": f"r{i}", "text": f"Sentence {i}.", "target_lang": "French"} for i in range(20)
    ]
    records += [{"id": "r1", "text": "again", "target_lang": "French"}] * 3  # repeated ids
    records += ["not json", {"id": "x", "text": "no target_lang"}]  # two invalid lines
    write_jsonl(tmp_path / "in.jsonl", records)
    write_job(tmp_path)
    code, out = _run(tmp_path, 120)
    assert code == 4, out[-2000:]  # finished, with invalid records
    screen = _screen(out, 120)
    text = "".join(screen)
    assert "this input: 25 records, 0 already final (skipped), 3 repeated ids, 22 to send" in text
    assert re.search(r"\b22/22\s+100%", _rows(screen)["total"]), screen
    m = SUMMARY.search(text)
    assert m, text
    assert (m[2], m[4]) == ("20", "2")  # done, invalid
