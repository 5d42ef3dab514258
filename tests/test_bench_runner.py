"""`python -m tests.bench` runs and writes its report (a smoke run: no timing is asserted).

The runner rewrites only the marked section of the output file; what is around it survives.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_header_and_table(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(
        "# Benchmarks\n\n<!-- bench:begin -->\nold figures\n<!-- bench:end -->\n\n"
        "## Store\n\nhand-written\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--only", "zero", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.count("<!-- bench:begin -->") == text.count("<!-- bench:end -->") == 1
    assert "old figures" not in text
    assert text.rstrip().endswith("## Store\n\nhand-written")
    section = text.split("<!-- bench:begin -->")[1].split("<!-- bench:end -->")[0]
    assert re.search(r"^- commit: [0-9a-f]{7,}", section, flags=re.M)
    assert re.search(r"^- date: \d{4}-\d\d-\d\d", section, flags=re.M)
    assert re.search(r"^- machine: \d+ .*cores, .*RAM", section, flags=re.M)
    assert re.search(r"^- load average .*before .*after", section, flags=re.M)
    assert "| figure | ours | baseline (same run) | ratio | target | met? |" in section
    rows = [ln for ln in section.splitlines() if ln.startswith("| 0 ms")]
    assert len(rows) == 2  # the rate and the CPU per record, each against the bare loop
    assert all(ln.split("|")[-2].strip() in ("yes", "**no**") for ln in rows)
