"""The full bad-night soak of issue 9: 10,000 records against chaos at concurrency 128, a
reader opening the database every few seconds, one kill -9 midway, reruns until nothing is
pending. Prints the figures; exits 1 if an invariant fails.

    /work/venv/bin/python tests/bench/bench_soak.py [--records 10000] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak import run_soak


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=128)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        r = run_soak(
            Path(tmp), a.records, concurrency=a.concurrency, kill_after_calls=a.records // 3
        )
        took = time.monotonic() - t0
    print(f"soak {a.records} records, concurrency {a.concurrency}: {took:.0f} s")
    print(f"  exit codes of the reruns: {r.exit_codes}; statuses {r.statuses}")
    print(f"  DuckDB ${r.db_usd} vs ledger ${r.ledger_usd} (still reserved ${r.reserved_usd})")
    print(f"  answers billed but not logged (in flight at the kill): {r.unlogged_answers}")
    print(f"  reader opened the file {r.reader_opens} times; tracebacks: {r.tracebacks}")
    ok = (
        r.tracebacks == 0
        and set(r.statuses) <= {"done", "failed"}
        and sum(r.statuses.values()) == r.records
        and r.untyped_failures == 0
        and r.db_usd >= r.ledger_usd
        and r.db_usd - r.ledger_usd <= r.reserved_usd
    )
    print("  invariants:", "hold" if ok else "BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
