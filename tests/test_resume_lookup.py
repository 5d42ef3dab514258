"""Resume at scale (issue 11): the store's answers against real DuckDB files and inputs.

The reference is `MemoryLookup` over the dict the store used to load (`final_keys`), plus the
rows' line fingerprints: for every input line the scan (`runner.resume`: every line hashed,
the join on `results.line_fp`, then the keys of the other lines) must read exactly the lines
that are not final and unchanged, answer for each what the dict did, and count the lines it
skips unread as the intake would have: across batches of the scan, staging and fetches, for
duplicates far apart, stale fingerprints, earlier failures, another job's rows, blank lines.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import pytest
from factories import texts, write_job, write_jsonl
from subprocs import job_endpoint, query, run_cli, simulator

from batchroute import reader as reader_mod
from batchroute.errors import InputError
from batchroute.lookup import MemoryLookup
from batchroute.plan import Overrides
from batchroute.reader import LineIndex, LineReader, key_of, line_fp, read_records, scan_line_fps
from batchroute.runner.resume import Skipped, open_lookup, pending
from batchroute.store import ResultStore
from batchroute.store import resume as resume_mod
from batchroute.types import Known, Record, RecordStatus, ResultRow

SALT = b"0123456789abcdef"
FINAL = 30_000


def _row(
    key: str, status: RecordStatus, fp: str | None, job: str = "j", lfp: int | None = None
) -> ResultRow:
    return ResultRow(job, key, "r1", 1, status, attempts=1, request_fp=fp, line_fp=lfp)


def _line(key: str, text: str = "t") -> bytes:
    return json.dumps({"id": key, "text": text}).encode()


def _scan(
    store: ResultStore,
    path: Path,
    statuses: frozenset[RecordStatus] | set[RecordStatus],
    job: str = "j",
    id_field: str | None = "id",
) -> tuple[dict[int, Known], Skipped, tuple[int, int, int]]:
    """The feed's pass as the runner makes it: each line read → its verdict; the rest summed;
    and the lookup's (records, final, duplicates)."""
    read: dict[int, Known] = {}
    skipped = Skipped()
    raws = [r.rstrip(b"\r") for r in path.read_bytes().split(b"\n")]
    scan = open_lookup(
        store, job, path, id_field=id_field, salt=SALT, final_statuses=frozenset(statuses)
    )
    try:
        for item in pending(scan, id_field=id_field, salt=SALT):
            if isinstance(item, Skipped):
                skipped.final += item.final
                skipped.failed += item.failed
                skipped.repeats += item.repeats
                continue
            assert isinstance(item, Record)
            assert item.line_fp == line_fp(raws[item.line_no - 1], SALT)
            read[item.line_no] = scan.lookup.next(item.key)
        lk = scan.lookup
        totals = (lk.records, lk.final, lk.duplicates)
    finally:
        scan.close()
    return read, skipped, totals


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> ResultStore:
    """30k results of job `j` (done, failed, invalid, pending; some without a fingerprint;
    every 3rd with the line fingerprint of `_line(key)`, every 3rd+1 with another one, the
    rest without: written before line_fp) and 3k of another job with the same keys and line
    fingerprints."""
    store = ResultStore(tmp_path_factory.mktemp("hist") / "results.duckdb")
    store.migrate()
    statuses = [RecordStatus.DONE] * 7 + [RecordStatus.FAILED, RecordStatus.INVALID]
    statuses.append(RecordStatus.PENDING)

    def lfp(i: int) -> int | None:
        return (line_fp(_line(f"k{i:06d}"), SALT), 1, None)[i % 3]

    rows = [
        _row(f"k{i:06d}", statuses[i % 10], None if i % 97 == 0 else f"fp{i}", lfp=lfp(i))
        for i in range(FINAL)
    ]
    rows += [
        _row(f"k{i:06d}", RecordStatus.DONE, "other", job="other", lfp=lfp(i))
        for i in range(FINAL, FINAL + 3_000)
    ]
    store.write(rows, [])
    return store


def _input_lines() -> list[bytes]:
    """~40k lines in shuffled order: 26k keys of the history (their line as stored, or with
    other text), 10k new, 3k of the other job's keys, 4k repeats (a key again far from its
    first occurrence: the same line, or other text), blank lines between."""
    rng = random.Random(11)
    keys = [f"k{i:06d}" for i in rng.sample(range(FINAL), 26_000)]
    keys += [f"new{i}" for i in range(10_000)]
    keys += [f"k{i:06d}" for i in range(FINAL, FINAL + 3_000)]
    rng.shuffle(keys)
    keys += rng.sample(keys, 4_000)
    lines = [_line(k, "t" if rng.random() < 0.8 else "changed") for k in keys]
    for i in rng.sample(range(len(lines)), 300):
        lines[i] = rng.choice([b"", b"  ", b"\t"])
    return lines


def _expected(
    store: ResultStore, lines: list[bytes], statuses: frozenset[RecordStatus]
) -> tuple[dict[int, Known], Skipped, tuple[int, int, int]]:
    """What the scan must give, from the dict the store used to load and the rows' line_fp."""
    kept = {RecordStatus.FAILED, RecordStatus.INVALID} & statuses
    ref = MemoryLookup(
        store.final_keys("j", statuses=statuses), store.final_keys("j", statuses=kept)
    )
    stored = dict(query(store.path, "SELECT record_key, line_fp FROM results WHERE job_name = 'j'"))
    read: dict[int, Known] = {}
    skipped = Skipped()
    records = final = dups = 0
    for no, raw in enumerate(lines, 1):
        key = key_of(raw, "id")
        if key is None:
            continue
        records += 1
        known = ref.next(key)
        dups += known.duplicate
        final += known.final
        lfp = stored.get(key) if known.final or known.duplicate else None
        if lfp is not None and lfp == line_fp(raw, SALT) and key in ref._final:
            if known.duplicate:
                skipped.repeats += 1
            else:
                skipped.final += 1
                skipped.failed += known.failed_before
            continue
        read[no] = known if not known.final else known._replace(line_fp=stored.get(key))
    return read, skipped, (records, final, dups)


@pytest.mark.parametrize("retry_failed", [False, True])
def test_the_scan_reads_exactly_the_lines_not_final_and_unchanged(
    history: ResultStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retry_failed: bool
) -> None:
    monkeypatch.setattr(reader_mod, "CHUNK", 50_000)  # many batches of lines
    monkeypatch.setattr(resume_mod, "FETCH", 1_000)  # many fetches
    statuses = Overrides(retry_failed=retry_failed).final_statuses
    lines = _input_lines()
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = _scan(history, path, statuses)
    want = _expected(history, lines, statuses)
    assert got[2] == want[2]
    assert got[1] == want[1]
    assert got[0].keys() == want[0].keys()
    assert got[0] == want[0]
    read, skipped, _ = got
    assert skipped.final > 4_000  # the bulk path was taken
    assert skipped.repeats > 100
    assert (skipped.failed > 0) is not retry_failed
    assert sum(k.duplicate for k in read.values()) > 100  # repeats with other text: read
    assert any(k.final and k.line_fp is None for k in read.values())  # rows before line_fp
    assert any(k.final and k.fp is None for k in read.values())  # done before fingerprints


def test_a_job_without_history_still_finds_duplicates(history: ResultStore, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    keys = ["a", "b", "a", "c", "b", "a"]
    path.write_bytes(b"\n".join(_line(k, str(i)) for i, k in enumerate(keys)))
    read, skipped, totals = _scan(history, path, {RecordStatus.DONE}, job="nojob")
    assert [read[n].duplicate for n in sorted(read)] == [False, False, True, False, True, True]
    assert skipped == Skipped()
    assert totals == (6, 0, 3)


def test_identical_lines_repeat_without_being_read(tmp_path: Path) -> None:
    """A final line twice, and a final key whose changed line comes first: the first copy
    counts (read if changed), every later one is a repeat, read only if its line differs."""
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    store.write([_row(k, RecordStatus.DONE, "x", lfp=line_fp(_line(k), SALT)) for k in "ab"], [])
    path = tmp_path / "in.jsonl"
    lines = [_line("a"), _line("b", "changed"), _line("a"), _line("b"), _line("a", "other")]
    path.write_bytes(b"\n".join(lines) + b"\n")
    read, skipped, totals = _scan(store, path, {RecordStatus.DONE})
    assert read == {2: Known(False, True, "x", False, line_fp(_line("b"), SALT)), 5: Known(True)}
    assert skipped == Skipped(final=1, failed=0, repeats=2)
    assert totals == (5, 2, 3)


def test_the_run_may_write_while_the_lookup_streams(tmp_path: Path) -> None:
    """The file is detached after the joins: this process can open it for writing (DuckDB
    allows one handle per file and process), and read it, while the answers stream."""
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    store.write([_row(f"k{i}", RecordStatus.DONE, "x") for i in range(20_000)], [])
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(_line(f"k{i}") for i in range(20_000)))
    scan = open_lookup(
        store, "j", path, id_field="id", salt=SALT, final_statuses=frozenset({RecordStatus.DONE})
    )
    with scan.lookup as lookup:
        items = pending(scan, id_field="id", salt=SALT)
        first = next(items)
        assert isinstance(first, Record)
        assert lookup.next(first.key).final
        store.write([_row("fresh", RecordStatus.DONE, "y")], [])
        assert store.status_counts("j") == {"done": 20_001}
        verdicts = [isinstance(r, Record) and lookup.next(r.key).final for r in items]
        assert verdicts == [True] * 19_999
    assert not Path(f"{store.path}.resume.tmp").exists()


def test_the_answers_are_streamed_from_a_file_once_joined(tmp_path: Path) -> None:
    """The joins' instance keeps its allocator's memory while it lives (issue 11's memory
    target): once joined, the answers move to `<db>.resume.tmp/answers.duckdb` and a small
    instance streams them, in input order, with every verdict (here a new job's repeats)."""
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(_line(f"k{i % 15_000}") for i in range(20_000)) + b"\n\n")
    scan = open_lookup(
        store, "j", path, id_field="id", salt=SALT, final_statuses=frozenset({RecordStatus.DONE})
    )
    spill = Path(f"{store.path}.resume.tmp")
    with scan.lookup as lookup:
        assert [f.suffix for f in spill.iterdir()] == [".duckdb"]
        verdicts = [
            (r.line_no, lookup.next(r.key).duplicate)
            for r in pending(scan, id_field="id", salt=SALT)
            if isinstance(r, Record)
        ]
        assert verdicts == [(i + 1, i >= 15_000) for i in range(20_000)]
        assert (lookup.records, lookup.duplicates, lookup.final) == (20_000, 5_000, 0)
    assert not spill.exists()


def test_a_settled_answers_file_left_by_a_killed_run_is_no_obstacle(tmp_path: Path) -> None:
    """A run killed (kill -9) while its answers were settled leaves the spill directory and its
    file behind; the next run's lookup must settle beside it and remove it at close."""
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    spill = Path(f"{store.path}.resume.tmp")
    spill.mkdir()
    for name in ("answers.duckdb", "answers-1-deadbeef.duckdb"):  # before and after the fix
        with duckdb.connect(str(spill / name)) as left:
            left.execute("CREATE TABLE answers AS SELECT 1 AS pos")
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(_line(f"k{i}") for i in range(3)) + b"\n")
    scan = open_lookup(
        store, "j", path, id_field="id", salt=SALT, final_statuses=frozenset({RecordStatus.DONE})
    )
    with scan.lookup as lookup:
        verdicts = [
            (r.key, lookup.next(r.key).duplicate)
            for r in pending(scan, id_field="id", salt=SALT)
            if isinstance(r, Record)
        ]
        assert verdicts == [("k0", False), ("k1", False), ("k2", False)]
    assert not spill.exists()


def test_an_input_changed_between_the_passes_stops_the_run(
    history: ResultStore, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_line("k000001", "changed") + b"\n" + _line("k000002", "changed") + b"\n")
    scan = open_lookup(
        history, "j", path, id_field="id", salt=SALT, final_statuses=frozenset({RecordStatus.DONE})
    )
    with scan.lookup as lookup:
        path.write_bytes(_line("inserted", "c") + b"\n" + _line("k000002", "changed") + b"\n")
        items = pending(scan, id_field="id", salt=SALT)
        first = next(items)
        assert isinstance(first, Record)
        with pytest.raises(InputError, match="input changed"):
            lookup.next(first.key)
        items.close()
        path.write_bytes(b"short\n")
        reader = LineReader(path, scan.index)
        with pytest.raises(InputError, match="input changed"):
            reader.at(1)
        reader.close()


@pytest.mark.parametrize("chunk", [3, 7, 64, 1 << 22])
def test_the_scan_sees_the_lines_read_records_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Byte order mark, CR LF and lone CR, blank and whitespace lines, no final line ending,
    lines longer than a read: every line's fingerprint, its text and key are `read_records`'
    (what a resume compares with the stored line_fp must be what a run stored)."""
    monkeypatch.setattr(reader_mod, "CHUNK", chunk)
    lines = [
        b"\xef\xbb\xbf" + json.dumps({"id": "bom", "text": "t"}).encode(),
        json.dumps({"id": 7, "text": "an int id"}).encode(),
        json.dumps({"id": "", "text": "empty id"}).encode(),
        json.dumps({"id": [1], "text": "a list id"}).encode(),
        json.dumps({"text": "no id"}).encode() + b"\r\r",
        b"   ",
        b"[1, 2]",
        b"{not json",
        b"\xff\xfe bad utf-8",
        json.dumps({"id": True, "text": "a bool id\r in it"}).encode(),
        b"",
        json.dumps({"id": 7.5, "text": "x" * 300}).encode(),
    ]
    for end in (b"\n", b""):
        p = tmp_path / "in.jsonl"
        p.write_bytes(b"\r\n".join(lines) + end)
        index = LineIndex()
        fps = [fp for batch in scan_line_fps(p, SALT, index) for fp in batch]
        assert index.lines == len(fps) == len(lines)
        reader = LineReader(p, index)
        for id_field in ("id", None):
            recs = list(read_records(p, id_field=id_field, salt=SALT))
            assert len(recs) == 10  # blank lines are no records
            for r in recs:
                assert fps[r.line_no - 1] == r.line_fp
                assert key_of(reader.at(r.line_no - 1), id_field) == r.key
            blank = {i for i in range(len(lines)) if i + 1 not in {r.line_no for r in recs}}
            assert all(key_of(reader.at(i), id_field) is None for i in blank)
        reader.close()


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
    end, NULL-like text and non-ASCII all come back as themselves, at their positions; an
    empty input too."""
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
        '""',
        "ü ñ 字",
        "x" * 5000,
    ]
    keys = tricky + [f"k{i:06d}" for i in range(0, 200, 7)]
    keys += ["a", " a", "a "]  # not one key: no trimming
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    final = keys[::2]
    store.write([_row(k, RecordStatus.DONE, f"fp-{k}") for k in final], [])
    want = MemoryLookup({k: f"fp-{k}" for k in final})
    path = tmp_path / "in.jsonl"
    inputs = keys + keys[:3]
    path.write_bytes(b"\n".join(_line(k) for k in inputs))
    read, skipped, _ = _scan(store, path, {RecordStatus.DONE})
    assert skipped == Skipped()
    for no, k in enumerate(inputs, 1):
        assert read[no] == want.next(k), k
    path.write_bytes(b"")
    assert _scan(store, path, {RecordStatus.DONE}) == ({}, Skipped(), (0, 0, 0))
