"""Records whose id is an integer past 64 bits were merged into one key and lost (audit6).

orjson reads an integer literal too large for 64 bits as a float: the ids 12345678901234567890123
and 12345678901234567890124 both became the key "1.2345678901234568e+22". The second record was
counted a duplicate of the first, never sent, given no row: a record of the input silently
lost (and, once the first is final, every later record whose id rounds to the same float is
"skipped as final" with another record's answer). Such ids are common (order numbers, 128-bit
ids written as integers); the input is valid JSON and nothing said a thing was wrong.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factories import standin_job
from subprocs import query, run_cli_async
from test_billing_standin import MODEL, StandIn

IDS = (12345678901234567890123, 12345678901234567890124, 12345678901234567890125)


async def test_records_with_integer_ids_past_64_bits_are_each_answered(
    tmp_path: Path, serve: Any
) -> None:
    """Before (4fb9e65): 1 call, 1 row (key '1.2345678901234568e+22') for 3 records; the
    other two counted as duplicates and never sent."""
    standin = StandIn("ok")
    records = [
        f'{{"id": {i}, "text": "Sentence {n} to translate.", "target_lang": "French"}}'
        for n, i in enumerate(IDS)
    ]
    path = standin_job(tmp_path, await serve(standin), model=MODEL, cap=10, records=records)
    code, err = await run_cli_async("run", str(path))
    assert code == 0, err
    db = tmp_path / "results.duckdb"
    keys = sorted(k for (k,) in query(db, "SELECT record_key FROM results WHERE status = 'done'"))
    assert keys == sorted(str(i) for i in IDS), (keys, len(standin.billed))
    assert len(standin.billed) == len(IDS)
    # A second run finds all three final: nothing is sent again.
    code, err = await run_cli_async("run", str(path))
    assert code == 0, err
    assert len(standin.billed) == len(IDS)


def test_a_float_id_keeps_its_old_key_when_it_names_the_number_written() -> None:
    """Only ids the float misnames get a new key: a key stored by an earlier run stays."""
    import orjson

    from batchroute.reader import key_of

    def key(literal: str) -> str | None:
        return key_of(f'{{"id": {literal}, "text": "x"}}'.encode(), "id")

    assert [key(v) for v in ("1.10", "0.1", "1e5", "5", "9007199254740993")] == [
        "1.1",
        "0.1",
        "100000.0",
        "5",
        "9007199254740993",
    ]
    assert key("12345678901234567890123") == "12345678901234567890123"
    assert key("0.12345678901234567890") == "0.12345678901234567890"
    assert orjson.loads(b"12345678901234567890123") == orjson.loads(b"12345678901234567890124")
