"""A journal write that fails part way keeps what it did not write (fix4, audit4's disk full).

`Journal.sync` took the rows out of `_pending` before writing them: a write that failed
(ENOSPC) dropped them, and left a torn line that the next row written ran into (both lost on
replay). Now the unwritten rest is written first by the next write, so once the disk has room
again every row is in the file, whole.

Real parts: a real file in a subprocess whose file size limit (RLIMIT_FSIZE) makes `write()`
fail with EFBIG part way, as a full disk does with ENOSPC; then the limit is lifted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from subprocs import ENV, WAIT_S

from batchroute.journal import read_journal

ROWS = 30

SCRIPT = """
import errno, resource, signal, sys
from datetime import datetime
from decimal import Decimal
from batchroute.journal import Journal
from batchroute.types import AttemptOutcome, AttemptRow

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
journal = Journal(sys.argv[1])
journal.open()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), hard))
failed = 0
for i in range(int(sys.argv[2])):
    if i == int(sys.argv[2]) // 2:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    row = AttemptRow(
        "run", "job", f"key-{i}", 1, "t", "m", datetime(2026, 12, 7), 5, 200,
        AttemptOutcome.OK, None, None, Decimal("0.001"), "openrouter", f"gen-{i}",
        Decimal("0.002"), None, None,
    )
    try:
        journal.append(row)  # no event loop: written at once
    except OSError as exc:
        assert exc.errno == errno.EFBIG, exc
        failed += 1
journal.close()
print(failed)
"""


def test_rows_of_a_failed_write_are_written_by_the_next_one(tmp_path: Path) -> None:
    """Before (4b1b767): the rows whose writes failed were lost, and the first row written
    after them too (it ran into the torn line)."""
    db = tmp_path / "results.duckdb"
    limit = 1_000  # bytes: a few rows fit, the next is cut part way
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(db), str(ROWS), str(limit)],
        env=ENV, capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0  # writes did fail
    _, attempts = read_journal(tmp_path / "results.duckdb.journal")
    assert [a.record_key for a in attempts] == [f"key-{i}" for i in range(ROWS)]
