"""Resume at scale (issue 11): which lookup skips final records without holding the job's whole
history in memory. Target: a database of 10M final results, peak RSS ≤ 300 MB and ≥ 200k input
records skipped per second.

Run on demand (the first run builds the 10M-row file once, ~1 min, cached by size):
    .venv/bin/python tests/bench/bench_resume_scale.py [--records 10000000] [--input 2000000]
        [--repeat 2] [--only baseline,batch-10000,...]

The database has the product's schema (`ResultStore.migrate`) and 8,192-row row groups, as the
runner's write connection makes them; N results of job `bench` (keys `doc-000123456`, 16-hex
request_fp, status done) and N/10 of another job with the same keys. The input is M keys fed
as a stream, in one of two orders: `seq` (the order of the history, as a rerun of the same
file) or `random` (a fixed permutation: also what sha256 line keys look like to DuckDB).
5 % are new, 5 % final with a changed fingerprint (stale), 90 % final and unchanged; each
strategy's counts are checked against that.

Every strategy runs in a fresh interpreter (peak RSS = VmHWM of that process) and the
strategies are interleaved over `--repeat` rounds, so a load spike from other jobs on the
machine shows as a spread, not as a false ratio. The default strategies are the product's:

  product        `Runner.run` end to end on a 2M-line JSONL input (`input_file`) whose records
                 are all final in the file, as this batchroute wrote them (`fp_db`: request
                 and line fingerprints of those lines): the shipped resume
                 (`batchroute/runner/resume.py`): every line hashed in C code, one join on
                 `results.line_fp`, the final, unchanged lines counted in bulk, never read
                 again; every record skipped, none stale
  product-nofp   the same input over rows written before `results.line_fp` (migration 9),
                 whose request fingerprints differ from the lines': the full path (keys
                 joined, every line parsed, rendered, fingerprinted), every record skipped
                 and stale (the resume of ca83775)
  product-dict   the resume before issue 11 (`final_keys` → dict): no longer runs on this
                 code (the feed's protocol changed); its figures are in docs/benchmarks.md

(figures: docs/benchmarks.md, "Resume at scale"). The exploration that chose the join
(`--only` any of these):

  baseline       today: `ResultStore.final_keys` → dict, then one dict lookup per key
  batch-B        per batch of B input keys, one query: unnest(?::VARCHAR[]) joined with
                 results (persistent read connection); returns key → request_fp of the finals
  batch-B-open   the same, but through the store's own per-operation connection (`_tx()`:
                 open, ATTACH, BEGIN … COMMIT, close), as a `ResultStore` method would do it
  hash-array     md5_number_lower(record_key) and the fp as a UBIGINT, streamed sorted
                 (fetchmany) into two array('Q'); lookup by bisect
  hash-dict      the same hashes in a Python dict {int: int}
  input-join     pre-pass: the input's keys staged into a DuckDB temp table (spillable,
                 memory_limit), one join with results ordered by input position, streamed
                 back (fetchmany) and merged with a second pass over the input
  gen-only       just the input stream (the floor under every strategy)
  upsert-1k      context: RSS of one write of 1,000 results through the product's write
                 connection into the 10M table (ON CONFLICT probes the primary-key index;
                 rolled back, the file is unchanged)
  render-fp      context: the product's read_records + render + fingerprint over a JSONL
                 input (what the skip path costs per record besides the lookup)

Measured (2 cores, load 2.3-4.4, N = 10M, M = 2M, 2 rounds; records/s end to end / RSS):
baseline 67-91k/s, 2.69 GiB (16 s to build the dict); batch-B: every batch is a full scan of
the history (no ART probe: Sequential Scan with min/max + bloom-filter dynamic filters,
1160/1344 row groups read even in input order), ~0.1-0.9 s per batch whatever B, so
2k: 5k/s, 10k: 32-41k/s, 50k: 61-176k/s at 270-280 MiB, 200k: 151-248k/s at 390-410 MiB;
hash-array 105k/s at 420 MiB; hash-dict 1.48 GiB; input-join 178-209k/s at 291-295 MiB
(one scan, 2.4 s; the file is detached after it); read + render + fingerprint alone
267-276k/s (the product's skip path without any lookup).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

JOB = "bench"
OTHER = "other-job"
STATUSES = ["done", "failed", "invalid"]  # Overrides().final_statuses without --retry-failed
CACHE = Path("/tmp/br-resume-10m")
MISSING = object()
LOOKUP_MEM = os.environ.get("BR_LOOKUP_MEM", "128MB")  # DuckDB memory_limit of a lookup
PERM_A = 2_654_435_761  # a prime: j → (a·j + b) mod N is a permutation when gcd(a, N) = 1


def key_of(i: int) -> str:
    return f"doc-{i:09d}"


def fp_of(i: int) -> str:
    return hashlib.md5(f"fp{i}".encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the database
def build_db(n: int) -> Path:
    """The cached N-result file (built once per size; atomic: built aside, then renamed)."""
    import duckdb

    from batchroute.store import ResultStore

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"results-{n}-v1.duckdb"
    if path.exists():
        return path
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}.wal")):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    ResultStore(tmp).migrate()
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{tmp}' AS db (ROW_GROUP_SIZE 8192)")  # as the runner writes
    con.execute("USE db")
    con.execute(
        "INSERT INTO runs (run_id, job_name, started_at, finished_at, status, records_seen, "
        "records_done) VALUES ('run-bench', ?, TIMESTAMP '2026-01-01', "
        "TIMESTAMP '2026-01-02', 'completed', ?, ?)",
        [JOB, n, n],
    )
    sql = (
        "INSERT INTO results (job_name, record_key, run_id, line_no, task_type, complexity, "
        "tier, classifier, model_requested, model_served, provider, status, output, "
        "finish_reason, prompt_tokens, completion_tokens, cost_usd, cost_source, latency_ms, "
        "attempts, escalations, generation_id, request_fp, created_at) "
        "SELECT ?, 'doc-' || lpad(i::VARCHAR, 9, '0'), 'run-bench', i + 1, 'translation', "
        "'medium', 'mid', 'job.task', 'openai/gpt-4o-mini', 'openai/gpt-4o-mini', 'OpenAI', "
        "'done', 'Traduction de la phrase numéro ' || i::VARCHAR || '.', 'stop', 40 + i % 50, "
        "20 + i % 30, 0.000012, 'usage', 300 + i % 700, 1, 0, 'gen-' || i::VARCHAR, "
        "substr(md5('fp' || i::VARCHAR), 1, 16), "
        "TIMESTAMP '2026-01-01' + to_seconds(i // 100) FROM range(?) t(i)"
    )
    con.execute(sql, [JOB, n])
    con.execute(sql, [OTHER, n // 10])
    con.execute("CHECKPOINT")
    con.close()
    tmp.rename(path)
    size = path.stat().st_size / 2**20
    print(f"built {path} ({size:,.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


# ------------------------------------------------------------------------------ the input
def input_stream(n: int, m: int, order: str) -> Iterator[tuple[str, str]]:
    """(key, new fingerprint) for M input records: every 20th new, every 20th+1 stale."""
    if m > n:
        raise SystemExit("--input must not exceed --records (the input's keys are unique)")
    a = PERM_A
    while math.gcd(a, n) != 1:
        a += 2
    stride = max(1, n // m)
    for j in range(m):
        r = j % 20
        if r == 0:
            yield f"new-{j:09d}", fp_of(n + j)
            continue
        i = j * stride if order == "seq" else (a * j + 12_345) % n
        yield key_of(i), (fp_of(i) if r != 1 else fp_of(i + 1))


def expected(m: int) -> dict[str, int]:
    new = (m + 19) // 20
    stale = (m + 18) // 20
    return {"new": new, "stale": stale, "skip": m - new - stale}


class Tally:
    """The resume decision as `Intake.admit` makes it: unknown → send; final with an equal
    (or no) fingerprint → skip; final with another one → stale."""

    __slots__ = ("new", "skip", "stale")

    def __init__(self) -> None:
        self.new = self.skip = self.stale = 0

    def add(self, old: object, fp: str) -> None:
        if old is MISSING:
            self.new += 1
        elif old is None or old == fp:
            self.skip += 1
        else:
            self.stale += 1

    def counts(self) -> dict[str, int]:
        return {"new": self.new, "stale": self.stale, "skip": self.skip}


def batches(it: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    for kv in it:
        batch.append(kv)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------ strategies
BATCH_SQL = (
    "SELECT r.record_key, r.request_fp FROM results r "
    "SEMI JOIN (SELECT unnest($1::VARCHAR[]) AS k) s ON r.record_key = s.k "
    "WHERE r.job_name = $2 AND list_contains($3::VARCHAR[], r.status)"
)


def s_baseline(db: Path, stream: Iterator[tuple[str, str]], t: Tally) -> dict[str, float]:
    from batchroute.store import ResultStore
    from batchroute.types import RecordStatus

    t0 = time.perf_counter()
    final = ResultStore(db).final_keys(JOB, statuses=[RecordStatus(s) for s in STATUSES])
    setup = time.perf_counter() - t0
    get = final.get
    for k, fp in stream:
        t.add(get(k, MISSING), fp)
    return {"setup_s": setup}


def s_batch(
    db: Path, stream: Iterator[tuple[str, str]], t: Tally, size: int, per_op: bool
) -> dict[str, float]:
    import duckdb

    from batchroute.store import ResultStore

    store = ResultStore(db)
    # The buffer pool keeps every block a scan reads until memory_limit (80 % of RAM by
    # default): without a limit one scan of the history leaves ~700 MiB resident.
    con = None
    if not per_op:
        con = duckdb.connect(str(db), read_only=True, config={"memory_limit": LOOKUP_MEM})
    query_s, worst = 0.0, 0.0
    for batch in batches(stream, size):
        keys = [k for k, _ in batch]
        q0 = time.perf_counter()
        if con is not None:
            rows = con.execute(BATCH_SQL, [keys, JOB, STATUSES]).fetchall()
        else:
            with store._tx() as c:  # what a ResultStore method would do, per call
                c.execute(f"SET memory_limit = '{LOOKUP_MEM}'")
                rows = c.execute(BATCH_SQL, [keys, JOB, STATUSES]).fetchall()
        dt = time.perf_counter() - q0
        query_s += dt
        worst = max(worst, dt)
        found = dict(rows)
        for k, fp in batch:
            t.add(found.get(k, MISSING), fp)
    return {"query_s": query_s, "worst_batch_ms": worst * 1e3}


def _key_hash(k: str) -> int:
    return int.from_bytes(hashlib.md5(k.encode()).digest()[8:], "little")  # md5_number_lower


def _fp_int(fp: str | None) -> int:
    return 0 if fp is None else int(fp, 16)


HASH_SQL = (
    "SELECT md5_number_lower(record_key) AS h, "
    "COALESCE(TRY_CAST('0x' || request_fp AS UBIGINT), 0) AS f FROM results "
    "WHERE job_name = $1 AND list_contains($2::VARCHAR[], status)"
)


def _hash_con() -> Any:
    import duckdb

    (CACHE / "spill").mkdir(exist_ok=True)
    return duckdb.connect(
        ":memory:",
        config={"memory_limit": LOOKUP_MEM, "temp_directory": str(CACHE / "spill"), "threads": 2},
    )


def s_hash_array(db: Path, stream: Iterator[tuple[str, str]], t: Tally) -> dict[str, float]:
    t0 = time.perf_counter()
    con = _hash_con()
    con.execute(f"ATTACH '{db}' AS h (READ_ONLY)")
    con.execute("USE h")
    cur = con.execute(HASH_SQL + " ORDER BY h", [JOB, STATUSES])
    hs, fs = array("Q"), array("Q")
    while rows := cur.fetchmany(65_536):
        hs.extend([r[0] for r in rows])
        fs.extend([r[1] for r in rows])
    con.close()
    setup = time.perf_counter() - t0
    n = len(hs)
    for k, fp in stream:
        h = _key_hash(k)
        i = bisect_left(hs, h)
        if i < n and hs[i] == h:
            old = fs[i]
            # exact on the fp side: it is 64 bits of hex; 0 stands for "no fingerprint"
            t.add(None if old == 0 else old, fp if old == 0 else int(fp, 16))  # type: ignore[arg-type]
        else:
            t.add(MISSING, fp)
    return {"setup_s": setup, "bytes_held": hs.itemsize * n * 2}


def s_hash_dict(db: Path, stream: Iterator[tuple[str, str]], t: Tally) -> dict[str, float]:
    t0 = time.perf_counter()
    con = _hash_con()
    con.execute(f"ATTACH '{db}' AS h (READ_ONLY)")
    con.execute("USE h")
    cur = con.execute(HASH_SQL, [JOB, STATUSES])
    table: dict[int, int] = {}
    while rows := cur.fetchmany(65_536):
        table.update(rows)
    con.close()
    setup = time.perf_counter() - t0
    get = table.get
    for k, fp in stream:
        old = get(_key_hash(k), MISSING)
        if old is MISSING:
            t.add(MISSING, fp)
        else:
            t.add(None if old == 0 else old, fp if old == 0 else int(fp, 16))  # type: ignore[arg-type]
    return {"setup_s": setup}


def s_input_join(db: Path, make_stream: Any, t: Tally, chunk: int = 100_000) -> dict[str, float]:
    """Pass 1 stages (pos, key); one ordered join; pass 2 merges by position."""
    t0 = time.perf_counter()
    con = _hash_con()
    con.execute(f"ATTACH '{db}' AS h (READ_ONLY)")
    con.execute("CREATE TEMP TABLE staged (pos BIGINT, k VARCHAR)")
    pos = 0
    for batch in batches(make_stream(), chunk):
        keys = [k for k, _ in batch]
        con.execute(
            "INSERT INTO staged SELECT $1 + generate_subscripts($2::VARCHAR[], 1) - 1, "
            "unnest($2::VARCHAR[])",
            [pos, keys],
        )
        pos += len(keys)
    stage = time.perf_counter() - t0
    # The verdicts go to an in-memory (spillable) table and the file is detached before the
    # run goes on: the runner's writer opens the file per flush, and DuckDB refuses a second
    # handle on it in one process while a cursor keeps it attached.
    con.execute(
        "CREATE TEMP TABLE verdict AS SELECT s.pos, r.request_fp FROM staged s "
        "JOIN h.results r ON r.record_key = s.k "
        "WHERE r.job_name = $1 AND list_contains($2::VARCHAR[], r.status)",
        [JOB, STATUSES],
    )
    con.execute("DETACH h")
    con.execute("DROP TABLE staged")
    cur = con.execute("SELECT pos, request_fp FROM verdict ORDER BY pos")
    first = time.perf_counter() - t0
    rows: list[tuple[int, str | None]] = []
    ri = 0
    nxt = -1
    for j, (_k, fp) in enumerate(make_stream()):
        if nxt < j:
            if ri >= len(rows):
                rows = cur.fetchmany(65_536)
                ri = 0
            if ri < len(rows):
                nxt, old = rows[ri]
                ri += 1
            else:
                nxt = sys.maxsize
        if nxt == j:
            t.add(old, fp)
        else:
            t.add(MISSING, fp)
    con.close()
    return {"stage_s": stage, "join_s": first - stage}


def s_gen_only(db: Path, stream: Iterator[tuple[str, str]], t: Tally) -> dict[str, float]:
    for k, fp in stream:
        t.add(MISSING if k.startswith("new") else fp, fp)
    t.stale = expected(t.new + t.skip)["stale"]  # the floor has no lookups to find them
    t.skip -= t.stale
    return {}


def s_upsert_1k(db: Path, n: int) -> dict[str, float]:
    from datetime import UTC, datetime
    from decimal import Decimal

    from batchroute.store.connect import _open_for_write
    from batchroute.store.encode import bulk_write
    from batchroute.types import RecordStatus, ResultRow

    rows = [
        ResultRow(
            job_name=JOB,
            record_key=key_of(i) if i % 2 else f"new-{i}",
            run_id="run-upsert",
            line_no=i,
            status=RecordStatus.DONE,
            cost_usd=Decimal("0.00001"),
        )
        for i in range(0, n, max(1, n // 1000))
    ][:1000]
    t0 = time.perf_counter()
    con = _open_for_write(db)
    con.execute("BEGIN TRANSACTION")
    bulk_write(con, "results", rows, datetime.now(UTC).replace(tzinfo=None))
    con.execute("ROLLBACK")
    con.close()
    return {"setup_s": time.perf_counter() - t0}


def s_render_fp(m: int) -> tuple[int, dict[str, float]]:
    """The product's per-record skip path without the lookup: read, render, fingerprint."""
    import tempfile

    import yaml

    from batchroute.plan import render
    from batchroute.prompt import fingerprint, request_params
    from batchroute.reader import read_records
    from batchroute.spec import load_spec
    from tests.bench._harness import write_input
    from tests.factories import job_dict

    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        tmp = Path(d)
        write_input(tmp / "in.jsonl", m)
        job = job_dict(tmp, name=JOB)
        (tmp / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
        spec = load_spec(tmp / "job.yaml")
        params = request_params(spec.request)
        t0 = time.perf_counter()
        n = sum(1 for _ in read_records(spec.input, id_field=spec.id_field))
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for rec in read_records(spec.input, id_field=spec.id_field):
            msgs = render(spec, rec)
            assert not isinstance(msgs, str)
            fingerprint(msgs, params)
        full_s = time.perf_counter() - t0
    return n, {"read_only_rps": n / read_s, "seconds": full_s}


# --------------------------------------------------------------- the product, end to end
def input_file(n: int, m: int, order: str) -> Path:
    """The cached JSONL input of a product run: M records whose keys are final in the DB (the
    keys of `input_stream`'s 90 % final ones, `seq` or `random`, and instead of its new ones
    further history keys), in the shape of the runner benchmarks' records."""
    path = CACHE / f"input-{n}-{m}-{order}.jsonl"
    if path.exists():
        return path
    tmp = path.with_suffix(".building")
    a = PERM_A
    while math.gcd(a, n) != 1:
        a += 2
    stride = max(1, n // m)
    langs = ["French", "German", "Spanish", "Japanese"]
    with tmp.open("w") as fh:
        for j in range(m):
            i = j * stride if order == "seq" else (a * j + 12_345) % n
            text = f"Sentence number {i} to translate. " * (1 + i % 4)
            fh.write(json.dumps({"id": key_of(i), "text": text, "target_lang": langs[i % 4]}))
            fh.write("\n")
    tmp.rename(path)
    return path


def _schema_tag() -> str:
    """The migrations this checkout knows, as a short tag: a product run migrates its copy, and
    a copy migrated by one branch (say, its own migration 7) must not be reused by another."""
    from batchroute.store.migrations import MIGRATIONS

    return hashlib.md5(repr([m.name for m in MIGRATIONS]).encode()).hexdigest()[:8]


def runs_db(db: Path, suffix: str = "runs") -> Path:
    """A copy of the cached file for product runs, which write (their `runs` row, the
    catalogue cache): the strategies above, and other checkouts sharing /tmp, read the
    original; no record is sent, so the results stay the same."""
    path = db.with_name(f"{db.stem}-{suffix}-{_schema_tag()}.duckdb")
    if not path.exists():
        tmp = path.with_suffix(".copying")
        shutil.copyfile(db, tmp)
        tmp.rename(path)
    return path


def fp_db(db: Path, n: int, m: int) -> Path:
    """A copy whose results for the keys of both inputs (`seq`, `random`) hold what a run of
    the bench job writes for their lines: the request fingerprint and the line fingerprint
    (`results.line_fp`). A product run over it is the ordinary resume of an unchanged input:
    every record final, none stale."""
    import tempfile

    import duckdb
    import yaml

    from batchroute.plan import render
    from batchroute.prompt import fingerprint, line_salt, request_params
    from batchroute.reader import read_records
    from batchroute.spec import load_spec
    from batchroute.store import ResultStore
    from tests.factories import job_dict

    path = db.with_name(f"{db.stem}-fp-{m}-{_schema_tag()}.duckdb")
    if path.exists():
        return path
    t0 = time.perf_counter()
    tmp = path.with_suffix(".building")
    shutil.copyfile(db, tmp)
    ResultStore(tmp).migrate()  # the line_fp column
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        job = job_dict(Path(d), name=JOB, input=str(input_file(n, m, "seq")))
        (Path(d) / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
        spec = load_spec(Path(d) / "job.yaml")
    params = request_params(spec.request)
    salt = line_salt(spec.prompt, params, spec.id_field)
    con = duckdb.connect(str(tmp))
    con.execute("CREATE TEMP TABLE fps (k VARCHAR, fp VARCHAR, lfp BIGINT)")
    for order in ("seq", "random"):
        rows: list[tuple[str, str, int | None]] = []
        for rec in read_records(input_file(n, m, order), id_field=spec.id_field, salt=salt):
            msgs = render(spec, rec)
            assert not isinstance(msgs, str)
            rows.append((rec.key, fingerprint(msgs, params), rec.line_fp))
            if len(rows) == 100_000:
                con.execute(
                    "INSERT INTO fps SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), "
                    "unnest($3::BIGINT[])",
                    [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
                )
                rows = []
        if rows:
            con.execute(
                "INSERT INTO fps SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), "
                "unnest($3::BIGINT[])",
                [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
            )
    con.execute(
        "UPDATE results SET request_fp = f.fp, line_fp = f.lfp "
        "FROM (SELECT DISTINCT k, fp, lfp FROM fps) f "
        "WHERE results.job_name = ? AND results.record_key = f.k",
        [JOB],
    )
    con.execute("CHECKPOINT")
    con.close()
    tmp.rename(path)
    print(f"built {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return path


def s_product(
    db: Path, n: int, m: int, order: str, fresh: bool = True
) -> tuple[int, dict[str, Any]]:
    """`Runner.run` on a job whose M input records are all final in the 10M-result file.
    `fresh`: the rows are what this batchroute writes for those lines (request and line
    fingerprints: skipped, none stale); else rows written before `line_fp` whose request
    fingerprints differ from the history's (every one rendered, skipped and counted stale)."""
    import tempfile

    import yaml

    from batchroute.runner.run import Runner
    from batchroute.store import ResultStore
    from tests.bench._harness import run_batchroute, simulator
    from tests.factories import job_dict

    src = input_file(n, m, order)
    db = fp_db(db, n, m) if fresh else runs_db(db)
    lookup_s: list[float] = []
    real = ResultStore.resume_lookup

    def timed(self: ResultStore, job: str, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        lk = real(self, job, *args, **kw)
        lookup_s.append(time.perf_counter() - t0)
        return lk

    ResultStore.resume_lookup = timed  # type: ignore[method-assign]
    feed_s: list[float] = []
    real_feed = Runner._feed

    async def feed(self: Runner) -> None:
        t0 = time.perf_counter()
        await real_feed(self)
        feed_s.append(time.perf_counter() - t0)

    Runner._feed = feed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(dir=CACHE) as d, simulator() as sim:
        tmp = Path(d)
        job = job_dict(tmp, name=JOB, input=str(src), output={"database": str(db)})
        (tmp / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
        seconds, report = run_batchroute(tmp / "job.yaml", sim.url, db)
    c = report.counts
    ok = (c.skipped, c.done, c.duplicates, report.stale) == (m, 0, 0, 0 if fresh else m)
    extra: dict[str, Any] = {"seconds": seconds, "lookup_s": lookup_s[0], "ok": ok}
    extra["feed_s"] = feed_s[0]  # the skip loop alone: read, lookup, render, fingerprint
    extra["counts"] = {"skipped": c.skipped, "stale": report.stale, "done": c.done}
    return m, extra


# ------------------------------------------------------------------------------ one worker
def rss_mib() -> float:
    """Peak RSS of this process: VmHWM (per address space, so reset by exec); ru_maxrss
    survives exec on Linux and would report the parent's peak for a small child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def until(it: Iterator[tuple[str, str]], deadline: float) -> Iterator[tuple[str, str]]:
    """The stream, cut at the first multiple of 1,000 records after `deadline`."""
    for j, kv in enumerate(it):
        if j % 1000 == 0 and time.perf_counter() > deadline:
            return
        yield kv


def worker(name: str, db: Path, n: int, m: int, order: str, cap_s: float) -> dict[str, Any]:
    import duckdb  # imported before the clock, as the runner has it loaded already

    _ = duckdb
    import batchroute.store  # noqa: F401

    base = rss_mib()
    cpu0 = sum(os.times()[:2])
    t = Tally()
    t0 = time.perf_counter()
    extra: dict[str, float]
    records = m

    def stream() -> Iterator[tuple[str, str]]:
        return input_stream(n, m, order)

    if name == "baseline":
        extra = s_baseline(db, stream(), t)
    elif name.startswith("batch-"):
        parts = name.split("-")
        capped = until(stream(), time.perf_counter() + cap_s)
        extra = s_batch(db, capped, t, int(parts[1]), per_op=parts[-1] == "open")
        records = t.new + t.skip + t.stale  # a prefix when the cap stopped it
    elif name == "hash-array":
        extra = s_hash_array(db, stream(), t)
    elif name == "hash-dict":
        extra = s_hash_dict(db, stream(), t)
    elif name == "input-join":
        extra = s_input_join(db, stream, t)
    elif name == "gen-only":
        extra = s_gen_only(db, stream(), t)
    elif name == "upsert-1k":
        extra, records = s_upsert_1k(db, n), 1000
    elif name == "render-fp":
        records, extra = s_render_fp(min(m, 500_000))
    elif name == "product-dict":
        raise SystemExit("product-dict: the dict resume is gone since the line scan; run ca83775")
    elif name in ("product", "product-nofp"):
        records, extra = s_product(db, n, m, order, fresh=name == "product")
    else:
        raise SystemExit(f"unknown strategy {name}")
    seconds = extra.pop("seconds", time.perf_counter() - t0)
    cpu = os.times()
    extra["cpu_us_per_record"] = (cpu.user + cpu.system - cpu0) / max(1, records) * 1e6
    ok = extra.pop("ok", name in ("upsert-1k", "render-fp") or t.counts() == expected(records))
    counts = extra.pop("counts", t.counts())
    return {
        "name": name,
        "order": order,
        "seconds": seconds,
        "records": records,
        "rps": records / seconds,
        "rss_mib": rss_mib(),
        "base_rss_mib": base,
        "counts": counts,
        "capped": records < m and name.startswith("batch-"),
        "ok": ok,
        **extra,
    }


# ------------------------------------------------------------------------------ the driver
DEFAULT = "product-nofp,product"
EXPLORED = (
    "gen-only,baseline,batch-2000,batch-10000,batch-50000,batch-200000,batch-50000-open,"
    "batch-200000-open,hash-array,hash-dict,input-join,upsert-1k,render-fp"
)
ORDER_BLIND = {"baseline", "hash-array", "hash-dict", "gen-only", "upsert-1k", "render-fp"}


def run_worker(name: str, db: Path, a: argparse.Namespace, order: str) -> dict[str, Any]:
    args = [sys.executable, __file__, "--worker", name, "--db", str(db)]
    args += ["--records", str(a.records), "--input", str(a.input), "--order", order]
    args += ["--cap-s", str(a.cap_s)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {"name": name, "order": order, "error": out.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def fmt_row(rows: list[dict[str, Any]], gen_rps: float) -> str:
    """One table row; `net` = the lookup's own rate: the input stream's time taken out."""
    r0 = rows[0]
    if "error" in r0:
        return f"| {r0['name']} | {r0['order']} | error: {r0['error']} |"
    rps = sorted(r["rps"] for r in rows)
    rss = sorted(r["rss_mib"] for r in rows)
    secs = sorted(r["seconds"] for r in rows)
    nets = sorted(1 / max(1e-9, 1 / r["rps"] - 1 / gen_rps) for r in rows)
    notes = []
    for k in ("setup_s", "query_s", "stage_s", "join_s", "lookup_s", "feed_s"):
        if k in r0:
            notes.append(f"{k} {min(r[k] for r in rows):.2f}")
    if "cpu_us_per_record" in r0:
        cpu = min(r["cpu_us_per_record"] for r in rows)
        notes.append(f"CPU {cpu:.2f} µs/record ({1e6 / cpu:,.0f}/s of CPU)")
    if "worst_batch_ms" in r0:
        notes.append(f"worst batch {max(r['worst_batch_ms'] for r in rows):.0f} ms")
    if "read_only_rps" in r0:
        notes.append(f"read_records alone {min(r['read_only_rps'] for r in rows):,.0f}/s")
    if any(r.get("capped") for r in rows):
        notes.append(f"capped: {min(r['records'] for r in rows):,} records in --cap-s")
    notes.append("counts ok" if all(r["ok"] for r in rows) else f"COUNTS WRONG {r0['counts']}")
    span = lambda v, f: f.format(v[0]) if len(v) == 1 else f"{f.format(v[0])}–{f.format(v[-1])}"  # noqa: E731
    alone = ("gen-only", "upsert-1k", "render-fp", "product", "product-dict", "product-nofp")
    net = "—" if r0["name"] in alone else span(nets, "{:,.0f}")
    return (
        f"| {r0['name']} | {r0['order']} | {span(secs, '{:.2f}')} | {span(rps, '{:,.0f}')} | "
        f"{net} | {span(rss, '{:.0f}')} | {'; '.join(notes)} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000_000, help="final results in the DB")
    ap.add_argument("--input", type=int, default=2_000_000, help="input records (keys)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    ap.add_argument(
        "--only", default=DEFAULT, help=f"comma-separated strategies (also: {EXPLORED})"
    )
    ap.add_argument("--orders", default="seq,random")
    ap.add_argument(
        "--cap-s", type=float, default=20.0, help="stop a batch strategy after this (a prefix)"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--order", default="seq", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.db), a.records, a.input, a.order, a.cap_s)))
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    du = shutil.disk_usage(CACHE)
    print(f"disk free under {CACHE}: {du.free / 2**30:.0f} GiB; cores: {os.cpu_count()}")
    db = build_db(a.records)
    print(f"db {db}: {db.stat().st_size / 2**20:,.0f} MiB")
    names = a.only.split(",")
    orders = a.orders.split(",")
    # The product runs' inputs and copies are built here, once, not inside a timed worker.
    if any(nm.startswith("product") for nm in names):
        for o in ("seq", "random"):
            input_file(a.records, a.input, o)
        runs_db(db)
        if "product" in names:
            fp_db(db, a.records, a.input)
    jobs = [(nm, o) for nm in names for o in (orders[:1] if nm in ORDER_BLIND else orders)]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {j: [] for j in jobs}
    for rnd in range(a.repeat):
        print(f"round {rnd + 1}: load average {os.getloadavg()}", flush=True)
        for nm, o in jobs:
            r = run_worker(nm, db, a, o)
            results[(nm, o)].append(r)
            brief = "error" if "error" in r else f"{r['rps']:,.0f}/s, {r['rss_mib']:.0f} MiB"
            print(f"  {nm} [{o}]: {brief}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"\nN = {a.records:,} final results, M = {a.input:,} input keys, {a.repeat} rounds")
    gens = [r["rps"] for r in results.get(("gen-only", orders[0]), []) if "rps" in r]
    gen_rps = sum(gens) / len(gens) if gens else float("inf")
    print("| strategy | order | seconds | records/s | net lookup/s | peak RSS MiB | notes |")
    print("|---|---|---|---|---|---|---|")
    for j in jobs:
        print(fmt_row(results[j], gen_rps))
    shutil.rmtree(CACHE / "spill", ignore_errors=True)


if __name__ == "__main__":
    main()
