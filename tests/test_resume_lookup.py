"""Resume at scale (issue 11): the store's `ResumeLookup` against real DuckDB files.

The reference is `MemoryLookup` over the dict the store used to load (`final_keys`): for every
input position the one join must answer what the dict did, across staging chunks and fetch
batches, for duplicates far apart, stale fingerprints, earlier failures, another job's keys.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from factories import texts, write_job, write_jsonl
from subprocs import job_endpoint, query, run_cli, simulator

from batchroute.errors import InputError
from batchroute.lookup import MemoryLookup
from batchroute.plan import Overrides
from batchroute.reader import read_keys, read_records
from batchroute.store import ResultStore
from batchroute.store import resume as resume_mod
from batchroute.types import Known, RecordStatus, ResultRow

FINAL = 30_000


def _row(key: str, status: RecordStatus, fp: str | None, job: str = "j") -> ResultRow:
    return ResultRow(job, key, "r1", 1, status, attempts=1, request_fp=fp)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> ResultStore:
    """30k results of job `j` (done, failed, invalid, pending; some without a fingerprint)
    and 3k of another job with the same keys."""
    store = ResultStore(tmp_path_factory.mktemp("hist") / "results.duckdb")
    store.migrate()
    statuses = [RecordStatus.DONE] * 7 + [RecordStatus.FAILED, RecordStatus.INVALID]
    statuses.append(RecordStatus.PENDING)
    rows = [
        _row(f"k{i:06d}", statuses[i % 10], None if i % 97 == 0 else f"fp{i}") for i in range(FINAL)
    ]
    rows += [_row(f"k{i:06d}", RecordStatus.DONE, "other", job="other") for i in range(3_000)]
    store.write(rows, [])
    return store


def _input_keys() -> list[str]:
    """40k keys in shuffled order: 26k of the history, 10k new, 4k repeats (a key again far
    from its first occurrence, both final ones and new ones)."""
    rng = random.Random(11)
    keys = [f"k{i:06d}" for i in rng.sample(range(FINAL), 26_000)]
    keys += [f"new{i}" for i in range(10_000)]
    rng.shuffle(keys)
    return keys + rng.sample(keys, 4_000)


@pytest.mark.parametrize("retry_failed", [False, True])
def test_the_join_answers_what_the_dict_did(
    history: ResultStore, monkeypatch: pytest.MonkeyPatch, retry_failed: bool
) -> None:
    monkeypatch.setattr(resume_mod, "STAGE_CHUNK", 7_000)  # several INSERTs
    monkeypatch.setattr(resume_mod, "FETCH", 1_000)  # many fetches
    statuses = Overrides(retry_failed=retry_failed).final_statuses
    kept = {RecordStatus.FAILED, RecordStatus.INVALID} & statuses
    reference = MemoryLookup(
        history.final_keys("j", statuses=statuses), history.final_keys("j", statuses=kept)
    )
    keys = _input_keys()
    got: list[Known] = []
    with history.resume_lookup("j", iter(keys), final_statuses=statuses) as lookup:
        got = [lookup.next(k) for k in keys]
    want = [reference.next(k) for k in keys]
    assert got == want
    assert sum(k.duplicate for k in got) == 4_000
    assert (sum(k.failed_before for k in got) > 0) is not retry_failed
    assert any(k.final and k.fp is None for k in got)  # done before fingerprints were kept
    # the answers hold what stale detection needs: the fingerprint the history has
    assert all(k.fp == f"fp{int(key[1:])}" for key, k in zip(keys, got, strict=True) if k.fp)


def test_a_job_without_history_still_finds_duplicates(history: ResultStore) -> None:
    keys = ["a", "b", "a", "c", "b", "a"]
    with history.resume_lookup("nojob", keys, final_statuses={RecordStatus.DONE}) as lookup:
        dup = [lookup.next(k).duplicate for k in keys]
    assert dup == [False, False, True, False, True, True]


def test_the_run_may_write_while_the_lookup_streams(history: ResultStore, tmp_path: Path) -> None:
    """The file is detached after the join: this process can open it for writing (DuckDB
    allows one handle per file and process), and read it, while the answers stream."""
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    store.write([_row(f"k{i}", RecordStatus.DONE, "x") for i in range(20_000)], [])
    keys = [f"k{i}" for i in range(20_000)]
    with store.resume_lookup("j", keys, final_statuses={RecordStatus.DONE}) as lookup:
        assert lookup.next("k0").final
        store.write([_row("fresh", RecordStatus.DONE, "y")], [])
        assert store.status_counts("j") == {"done": 20_001}
        assert all(lookup.next(k).final for k in keys[1:])
    assert not Path(f"{store.path}.resume.tmp").exists()


def test_an_input_changed_between_the_passes_stops_the_run(history: ResultStore) -> None:
    keys = ["k000001", "k000002"]
    with history.resume_lookup("j", keys, final_statuses={RecordStatus.DONE}) as lookup:
        lookup.next("k000001")
        with pytest.raises(InputError, match="input changed"):
            lookup.next("inserted")


def test_read_keys_are_the_keys_of_read_records(tmp_path: Path) -> None:
    lines = [
        b"\xef\xbb\xbf" + json.dumps({"id": "bom", "text": "t"}).encode(),
        json.dumps({"id": 7, "text": "an int id"}).encode(),
        json.dumps({"id": "", "text": "empty id"}).encode(),
        json.dumps({"id": [1], "text": "a list id"}).encode(),
        json.dumps({"text": "no id"}).encode(),
        b"   ",
        b"[1, 2]",
        b"{not json",
        b"\xff\xfe bad utf-8",
        json.dumps({"id": True, "text": "a bool id"}).encode(),
        b"",
        json.dumps({"id": 7.5, "text": "x"}).encode(),
    ]
    p = tmp_path / "in.jsonl"
    p.write_bytes(b"\r\n".join(lines) + b"\n")
    for id_field in ("id", None):
        want = [r.key for r in read_records(p, id_field=id_field)]
        assert list(read_keys(p, id_field=id_field)) == want
        assert len(want) == 10  # blank lines are no records, in both


def test_a_resumed_run_with_duplicates_and_limit_pays_each_key_once(tmp_path: Path) -> None:
    """End to end through the CLI: --limit, then the rest, then nothing; repeated keys (other
    text, far from their first line) are never sent, and the dry run agrees each time."""
    records = texts(100)
    repeats = [{**r, "text": r["text"] + " again"} for r in records[::5]]
    with simulator() as sim:
        write_jsonl(tmp_path / "in.jsonl", repeats[:3] + records + repeats[3:])
        job = write_job(
            tmp_path,
            endpoint=job_endpoint(sim),
            limits={"concurrency": 8, "requests_per_minute": None, "timeout_s": 30},
            request={"max_tokens": 2048},
        )
        sent = []
        for extra in (["--limit", "40"], [], []):
            quote = run_cli("run", str(job), "--dry-run", "--json", *extra)
            assert quote.returncode == 0, quote.stderr
            before = sim.calls()
            run = run_cli("run", str(job), *extra)
            assert run.returncode == 0, run.stderr
            sent.append(sim.calls() - before)
            assert json.loads(quote.stdout)["records"] == sent[-1]
    assert sent == [40, 60, 0]
    assert json.loads(quote.stdout)["duplicates"] == len(repeats)
    rows = query(tmp_path / "results.duckdb", "SELECT count(DISTINCT record_key) FROM results")
    assert rows == [(100,)]


def test_keys_of_any_text_are_staged_exactly_in_order(tmp_path: Path) -> None:
    """The keys reach DuckDB through a CSV file: quotes, commas, line breaks, spaces at either
    end, the empty string's neighbours, NULL-like text and non-ASCII all come back as
    themselves, at their positions; an empty input too."""
    tricky = [
        'a"b',
        "c,d",
        "e\nf",
        "g\r\nh",
        "p\rq",
        "t\tu",
        " i",
        "j ",
        "NULL",
        "",
        '""',
        "ü ñ 字",
        "x" * 5000,
    ]
    keys = [k for k in tricky if k] + [f"k{i:06d}" for i in range(0, 200, 7)]
    keys += ["a", " a", "a "]  # not one key: no trimming
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    final = keys[::2]
    store.write([_row(k, RecordStatus.DONE, f"fp-{k}") for k in final], [])
    want = MemoryLookup({k: f"fp-{k}" for k in final})
    with store.resume_lookup("j", keys + keys[:3], final_statuses={RecordStatus.DONE}) as lk:
        for k in keys + keys[:3]:
            assert lk.next(k) == want.next(k), k
    plain = ["p\rq", "t\tu", " a", "a", "NULL", "ω"]  # no quote or line feed: quoted at once
    store.write([_row(k, RecordStatus.DONE, "fp") for k in plain[::2]], [])
    with store.resume_lookup("j", plain, final_statuses={RecordStatus.DONE}) as lk:
        assert [lk.next(k).final for k in plain] == [True, False, True, False, True, False]
    with store.resume_lookup("j", [], final_statuses={RecordStatus.DONE}) as lk:
        assert lk.next("anything") == Known()
