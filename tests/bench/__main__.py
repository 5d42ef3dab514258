"""All the issue-11 figures in one command; writes the marked section of docs/benchmarks.md.

    python -m tests.bench [--quick] [--only zero,latency200,...] [--skip memory]
                          [--rounds 3] [--profile] [--uvloop] [--prebuilt]
                          [--out docs/benchmarks.md]

Benchmarks (default: all but `resume`, which is slow and only runs when named in --only):

  zero         0 ms latency, 20k records, concurrency 128: rate and client CPU per record,
               batchroute (store + journal on) vs a bare aiohttp loop
  latency200   200 ms, 10k records, concurrency 256: vs the bare loop and vs 256/0.2 s
  latency1000  1,000 ms, 20k records, concurrency 2,048: vs the bare loop; peak RSS of both
  memory       peak RSS of a 200k-record run vs a 10k-record run (bench_memory.py)
  store        bulk write vs row-by-row executemany (bench_store.py)
  resume       bench_resume_scale.py over 10M final results (the product's path + the floor)

Every measurement is a fresh interpreter (`_worker.py`) against a fresh simulator process, and
ours and the bare loop alternate within each round (the order flips every round), so load from
other processes hits both alike; the ratio shown is the median of the per-round ratios. Nothing
here is a timed assertion: the table says whether each target was met in this run.

Both clocks cover the same work (issue 11): each side's job file is parsed before its clock;
inside it, ours runs `run_job_async` whole, and the bare loop reads the job's input file line by
line and renders each request body as its workers pull them. (Until issue 11 the bare loop's
20k bodies were all built before its clock; `--prebuilt` measures that bare loop too, beside.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bench scripts import `_harness` as a top-level module

import _doc  # noqa: E402
from _doc import Row, Section  # noqa: E402
from _harness import PY, ROOT, simulator, write_job  # noqa: E402

NAMES = ["zero", "latency200", "latency1000", "memory", "store", "resume"]
DEFAULT = [n for n in NAMES if n != "resume"]
# (records, concurrency, latency ms) per latency figure: full size, --quick
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "zero": ((20_000, 128, 0), (300, 32, 0)),
    "latency200": ((10_000, 256, 200), (512, 128, 200)),
    "latency1000": ((20_000, 2_048, 1_000), (1_024, 512, 1_000)),
}


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def span(xs: list[float], f: str = "{:,.0f}") -> str:
    return f.format(min(xs)) if len(xs) == 1 else f"{f.format(min(xs))}–{f.format(max(xs))}"


def _writer_share(r: dict[str, Any]) -> str:
    """The writer process's part of the CPU (counted in it) and its own peak RSS, if any."""
    if not r.get("cpu_writer_s"):
        return ""
    us = r["cpu_writer_s"] * 1e6 / max(1, r["done"])
    return f" ({us:.0f} in the writer process, RSS {r.get('rss_writer_kib', 0) / 1024:.0f} MiB)"


def measure(
    tmp: Path, kind: str, job: Path, url: str, n: int, conc: int, loop: str
) -> dict[str, Any]:
    """One side, one fresh interpreter (`_worker.py`); its output JSON."""
    tag = f"{kind}-{loop}-{time.monotonic_ns()}"
    spec = {"kind": kind, "job": str(job), "url": url, "records": n, "concurrency": conc}
    spec |= {"loop": loop, "db": str(tmp / f"{tag}.duckdb")}
    if loop == "prebuilt":  # the bare loop as measured before: bodies built before its clock
        spec |= {"loop": "asyncio", "bodies": "before"}
    (tmp / f"{tag}.json").write_text(json.dumps(spec))
    out = tmp / f"{tag}.out.json"
    cmd = [PY, str(HERE / "_worker.py"), str(tmp / f"{tag}.json"), str(out)]
    spawned = time.time()
    # This tree's batchroute, as compare_trees.py gives each tree: without it the child took
    # whichever checkout the interpreter's editable install names (cpu6a, stop 25).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, timeout=1800, cwd=ROOT, env=env)
    result: dict[str, Any] = json.loads(out.read_text())
    # From the spawn: the interpreter's start, the imports and the job file, outside both
    # sides' clocks, counted in (what a user of the CLI waits for; issue 11).
    result["from_spawn_s"] = result["wall_end"] - spawned
    result["rate_spawn"] = result["done"] / result["from_spawn_s"]
    for p in tmp.glob(f"{tag}.duckdb*"):
        p.unlink()
    result["rate"] = result["done"] / result["seconds"]
    result["cpu_us"] = result["cpu_s"] * 1e6 / max(1, result["done"])
    result["rss_mib"] = result["rss_kib"] / 1024
    return result


def rounds_of(name: str, a: argparse.Namespace, sides: list[tuple[str, str]]) -> dict[str, Any]:
    """`a.rounds` rounds of every side against fresh simulators; {side: [result per round]}."""
    n, conc, lat = SIZES[name][1 if a.quick else 0]
    runs: dict[str, list[dict[str, Any]]] = {f"{k}/{lp}": [] for k, lp in sides}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = write_job(tmp, n, concurrency=conc, requests_per_minute=None)
        for rnd in range(a.rounds):
            for kind, loop in sides if rnd % 2 == 0 else sides[::-1]:
                with simulator(latency_ms=lat) as sim:
                    r = measure(tmp, kind, job, sim.url, n, conc, loop)
                runs[f"{kind}/{loop}"].append(r)
                print(
                    f"  [{name} {rnd + 1}] {kind}/{loop}: {r['done']} done in {r['seconds']:.2f}"
                    f" s = {r['rate']:,.0f} rec/s, CPU {r['cpu_us']:.0f} µs/rec"
                    f"{_writer_share(r)}, RSS {r['rss_mib']:.0f} MiB, load {_doc.load()[0]:.2f}",
                    flush=True,
                )
    return {"n": n, "conc": conc, "lat": lat, "runs": runs}


def sides(a: argparse.Namespace) -> list[tuple[str, str]]:
    extra = [("ours", "uvloop")] if a.uvloop else []
    extra += [("bare", "prebuilt")] if a.prebuilt else []
    return [("bare", "asyncio"), ("ours", "asyncio"), *extra]


def ratios(num: list[dict[str, Any]], den: list[dict[str, Any]], key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(num, den, strict=True)]


def rate_rows(label: str, r: dict[str, Any], target: str) -> tuple[list[Row], list[str]]:
    """The rate vs the bare loop (and vs uvloop, when measured), and the per-round detail."""
    bare, ours = r["runs"]["bare/asyncio"], r["runs"]["ours/asyncio"]
    rs = ratios(ours, bare, "rate")
    rows = [
        Row(
            f"{label}: rate, rec/s",
            f"{med([x['rate'] for x in ours]):,.0f}",
            f"{med([x['rate'] for x in bare]):,.0f} (bare aiohttp loop)",
            med(rs),
            target,
        )
    ]
    notes = [
        f"{label}: ours/bare per round {span(rs, '{:.2f}')}; ours {span([x['rate'] for x in ours])}"
        f" rec/s, bare {span([x['rate'] for x in bare])}; failed: ours "
        f"{sum(x['failed'] for x in ours)}, bare {sum(x['failed'] for x in bare)}"
    ]
    rsp = ratios(ours, bare, "rate_spawn")
    notes.append(
        f"{label}: from each process's spawn (interpreter start and imports in, which neither "
        f"clock counts) ours {span([x['rate_spawn'] for x in ours])} rec/s, bare "
        f"{span([x['rate_spawn'] for x in bare])}; ours/bare per round {span(rsp, '{:.2f}')} "
        f"(median {med(rsp):.2f}); outside the clock: ours "
        f"{span([x['from_spawn_s'] - x['seconds'] for x in ours], '{:.2f}')} s, bare "
        f"{span([x['from_spawn_s'] - x['seconds'] for x in bare], '{:.2f}')} s"
    )
    short = [x for x in ours + bare if x["done"] != r["n"]]
    if short:  # e.g. calls timing out under load until the run stops: its rate means little
        notes.append(
            f"{label}: **{len(short)} run(s) ended before all {r['n']:,} records were done** ("
            + ", ".join(f"{x['done']:,} done, {x.get('status', '?')}" for x in short)
            + "): their rate counts only what was done"
        )
    if "ours/uvloop" in r["runs"]:
        uv = r["runs"]["ours/uvloop"]
        ru = ratios(uv, ours, "rate")
        rows.append(
            Row(
                f"{label}: ours on uvloop, rec/s",
                f"{med([x['rate'] for x in uv]):,.0f}",
                f"{med([x['rate'] for x in ours]):,.0f} (ours on asyncio)",
                med(ru),
            )
        )
        notes.append(
            f"{label}: uvloop/asyncio per round {span(ru, '{:.2f}')}; CPU µs/record on uvloop "
            f"{span([x['cpu_us'] for x in uv])} vs {span([x['cpu_us'] for x in ours])}"
        )
    if "bare/prebuilt" in r["runs"]:
        pre = r["runs"]["bare/prebuilt"]
        rp = ratios(ours, pre, "rate")
        notes.append(
            f"{label}: the bare loop with every body built before its clock (as measured before "
            f"issue 11's fairness fix) {span([x['rate'] for x in pre])} rec/s; ours/that per "
            f"round {span(rp, '{:.2f}')} (median {med(rp):.2f})"
        )
    return rows, notes


def b_zero(a: argparse.Namespace) -> Section:
    r = rounds_of("zero", a, sides(a))
    label = f"0 ms, {r['n']:,} rec, conc. {r['conc']}"
    rows, notes = rate_rows(label, r, "≥ 0.70")
    bare, ours = r["runs"]["bare/asyncio"], r["runs"]["ours/asyncio"]
    cs = ratios(ours, bare, "cpu_us")
    rows.insert(
        1,
        Row(
            f"{label}: client CPU per record, µs",
            f"{med([x['cpu_us'] for x in ours]):.0f}",
            f"{med([x['cpu_us'] for x in bare]):.0f}",
            med(cs),
            "≤ 1.60",
        ),
    )
    notes.append(
        f"{label}: CPU ours/bare per round {span(cs, '{:.2f}')} (process CPU, all threads, "
        "plus the writer process)"
    )
    writer = [x.get("cpu_writer_s", 0.0) * 1e6 / max(1, x["done"]) for x in ours]
    if any(writer):
        own = [x["cpu_us"] - w for x, w in zip(ours, writer, strict=True)]
        own_ratio = [o / y["cpu_us"] for o, y in zip(own, bare, strict=True)]
        notes.append(
            f"{label}: of that CPU, the writer process (DuckDB) {span(writer)} µs/record; the "
            f"run's own process {span(own)} µs/record = {med(own_ratio):.2f}× bare (per round "
            f"{span(own_ratio, '{:.2f}')})"
        )
    return Section("zero latency", rows, notes)


def b_latency200(a: argparse.Namespace) -> Section:
    r = rounds_of("latency200", a, sides(a))
    label = f"{r['lat']} ms, {r['n']:,} rec, conc. {r['conc']}"
    rows, notes = rate_rows(label, r, "≥ 0.97")
    bound = r["conc"] / (r["lat"] / 1000)
    ours = [x["rate"] for x in r["runs"]["ours/asyncio"]]
    bare = [x["rate"] for x in r["runs"]["bare/asyncio"]]
    rows.insert(
        1,
        Row(
            f"{label}: rate vs the bound",
            f"{med(ours):,.0f}",
            f"{bound:,.0f} (conc./latency)",
            med(ours) / bound,
            "≥ 0.90",
        ),
    )
    notes.append(f"{label}: the bare loop reached {med(bare) / bound:.0%} of the bound")
    return Section("200 ms latency", rows, notes)


def b_latency1000(a: argparse.Namespace) -> Section:
    r = rounds_of("latency1000", a, sides(a))
    label = f"{r['lat']:,} ms, {r['n']:,} rec, conc. {r['conc']:,}"
    rows, notes = rate_rows(label, r, "≥ 0.95")
    bare, ours = r["runs"]["bare/asyncio"], r["runs"]["ours/asyncio"]
    rss = ratios(ours, bare, "rss_mib")
    rows.insert(
        1,
        Row(
            f"{label}: peak RSS, MiB",
            f"{med([x['rss_mib'] for x in ours]):.0f}",
            f"{med([x['rss_mib'] for x in bare]):.0f}",
            med(rss),
        ),
    )
    if any(x.get("rss_writer_kib") for x in ours):
        notes.append(
            f"{label}: ours is the run's process; its writer process (DuckDB) peaked at "
            f"{span([x.get('rss_writer_kib', 0) / 1024 for x in ours])} MiB beside it"
        )
    return Section("1,000 ms latency", rows, notes)


def b_memory(a: argparse.Namespace) -> Section:
    from bench_memory import measure as mem_run

    small_n, large_n = (1_000, 5_000) if a.quick else (10_000, 200_000)
    small, large = mem_run(small_n, 64), mem_run(large_n, 64)
    row = Row(
        f"peak RSS, {large_n:,} vs {small_n:,} records (conc. 64, 0 ms), MiB",
        f"{large['rss_kib'] / 1024:.0f}",
        f"{small['rss_kib'] / 1024:.0f} ({small_n:,} records)",
        large["rss_kib"] / small["rss_kib"],
        "≤ 1.30",
    )
    note = (
        f"one run each (fresh interpreter): {small_n:,} in {small['seconds']:.0f} s, "
        f"{large_n:,} in {large['seconds']:.0f} s ({large['done']:,} done)"
    )
    notes = [note]
    if large.get("rss_writer_kib"):
        w_small, w_large = small["rss_writer_kib"] / 1024, large["rss_writer_kib"] / 1024
        notes.append(
            f"the run's process; its writer process (DuckDB) peaked at {w_large:.0f} MiB for "
            f"{large_n:,} records and {w_small:.0f} MiB for {small_n:,} "
            f"({w_large / w_small:.2f}×)"
        )
    return Section("memory", [row], notes)


def b_store(a: argparse.Namespace) -> Section:
    from bench_store import attempts, baseline_executemany, results

    from batchroute.store import ResultStore

    n = 500 if a.quick else 5_000
    with tempfile.TemporaryDirectory() as d:
        store = ResultStore(Path(d) / "bench.duckdb")
        store.migrate()
        base = baseline_executemany(store, 200 if a.quick else 500)
        t = time.perf_counter()
        store.write(results(n), attempts(n))
        bulk = 2 * n / (time.perf_counter() - t)
    row = Row(
        f"store: `write()` {n:,} results + {n:,} attempts incl. open/close, rows/s",
        f"{bulk:,.0f}",
        f"{base:,.0f} (row-by-row executemany)",
        bulk / base,
        fmt="{:.0f}×",
    )
    return Section("store", [row], ["`tests/bench/bench_store.py` has the other store figures"])


def first_number(cell: str) -> float:
    m = re.match(r"\s*([\d,.]+)", cell)
    return float(m.group(1).replace(",", "")) if m else float("nan")


def b_resume(a: argparse.Namespace) -> Section:
    n, m = (200_000, 50_000) if a.quick else (10_000_000, 2_000_000)
    args = [PY, str(HERE / "bench_resume_scale.py"), "--records", str(n), "--input", str(m)]
    # `product`: the shipped resume (the line scan). The resume before issue 11 (the dict of
    # every final key, `product-dict`) no longer runs on this code: 2.7 GB at ca83775.
    args += ["--only", "gen-only,product", "--repeat", "1", "--orders", "seq"]
    args += a.resume_args
    out = subprocess.run(args, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    lines = out.stdout.splitlines()
    block = [ln for ln in lines if ln.startswith("|")]
    cells = {ln.split("|")[1].strip(): ln.split("|")[2:] for ln in block[2:]}
    section = Section("resume", notes=[f"`{' '.join(['bench_resume_scale.py', *args[2:]])}`"])
    if out.returncode != 0 or "product" not in cells:
        section.notes.append(f"failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        return section
    rps, rss = first_number(cells["product"][2]), first_number(cells["product"][4]) * 1.048576
    gen = first_number(cells["gen-only"][2]) if "gen-only" in cells else float("nan")
    label = f"resume, {n:,} finals, {m:,} input keys (product path)"
    section.rows += [
        Row(
            f"{label}: skipped rec/s",
            f"{rps:,.0f}",
            "200,000 (target rate)",
            rps / 200_000,
            "≥ 1.00",
        ),
        Row(f"{label}: peak RSS, MB", f"{rss:,.0f}", "300 MB (bound)", rss / 300, "≤ 1.00"),
    ]
    section.notes.append("peak RSS of the resume before issue 11 (dict): 2,833 MB at ca83775")
    section.notes.append(f"the input stream alone (gen-only): {gen:,.0f} rec/s")
    section.block = block
    return section


# innermost frames of a thread that waits: py-spy counts some of them as active here
IDLE = (
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "_worker (concurrent/futures/thread.py",
    "select (selectors.py",
    "Thread._wait_for_tstate_lock (threading.py",
    # asyncio's child watcher, blocked in waitpid() on the writer process for the whole run
    # (3 % of all samples, counted as the event loop's before; cpu3)
    "ThreadedChildWatcher._do_waitpid (asyncio/unix_events.py",
)


def summarize_profile(raw: Path) -> list[str]:
    """Shares of py-spy's busy samples by where the time goes (innermost known frame wins)."""
    cats: Counter[str] = Counter()
    own: Counter[str] = Counter()
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].startswith(IDLE):
            idle += int(count)
            continue
        cat, fn = classify(frames)
        cats[cat] += int(count)
        if fn:
            own[fn] += int(count)
    total = sum(cats.values()) or 1
    out = [
        f"Busy samples only: {idle / (idle + total):.0%} of all samples were threads waiting "
        "(a condition, the thread pool's queue, epoll) and are left out.",
        "",
        "| where | share of busy samples |",
        "|---|---|",
    ]
    out += [f"| {c} | {k / total:.0%} |" for c, k in cats.most_common()]
    out += [
        "",
        "batchroute's own functions with the most samples (innermost batchroute frame):",
        "",
    ]
    out += [f"- `{f}` {k / total:.1%}" for f, k in own.most_common(8)]
    return out


def classify(frames: list[str]) -> tuple[str, str]:
    """A sample's category, and the innermost batchroute function (file, no line) if it is ours."""
    joined = ";".join(frames)
    if "batchroute.writer " in joined:  # py-spy --subprocesses: the child's own process frame
        return "writer process (DuckDB; its own process, not the event loop's)", ""
    if "importlib._bootstrap" in joined:
        return "start-up (imports)", ""
    if "batchroute/store/" in joined:
        return "DuckDB in the run's process (`store/`: set-up, the run's end)", ""
    if "batchroute/journal" in joined:
        return "journal", ""
    for f in reversed(frames):
        if any(p in f for p in ("aiohttp/", "yarl/", "multidict/")):
            return "aiohttp", ""
        if "asyncio/" in f or "selectors.py" in f:
            return "asyncio (event loop)", ""
        if "batchroute/budget" in f:
            return "budget", ""
        if "batchroute/" in f:
            func, _, where = f.partition(" (")
            return "batchroute's own (dispatch, client parsing, rows, …)", (
                f"{func} ({where.split('batchroute/')[-1].rsplit(':', 1)[0]})"
            )
    return "other (harness, interpreter, threads)", ""


def profile(a: argparse.Namespace) -> list[str]:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    n, conc, _ = SIZES["zero"][1 if a.quick else 0]
    with tempfile.TemporaryDirectory() as d, simulator() as sim:
        tmp = Path(d)
        job = write_job(tmp, n, concurrency=conc, requests_per_minute=None)
        spec = {"kind": "ours", "job": str(job), "url": sim.url, "records": n, "concurrency": conc}
        spec |= {"loop": "asyncio", "db": str(tmp / "prof.duckdb")}
        (tmp / "spec.json").write_text(json.dumps(spec))
        raw = tmp / "profile.txt"
        cmd = [spy, "record", "--rate", "250", "--subprocesses", "--format", "raw", "-o"]
        cmd += [str(raw), "--"]
        cmd += [PY, str(HERE / "_worker.py"), str(tmp / "spec.json"), str(tmp / "out.json")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
        if done.returncode != 0 or not raw.exists():
            return [f"py-spy failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"]
        head = (
            f"### Profile (py-spy, 250 Hz, `batchroute run` at 0 ms, {n:,} records, conc. {conc}, "
            "after the figures)"
        )
        return [head, "", *summarize_profile(raw), ""]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (smoke run)")
    ap.add_argument("--only", help=f"comma-separated, of: {','.join(NAMES)}")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    ap.add_argument("--profile", action="store_true", help="add a py-spy profile summary")
    ap.add_argument("--uvloop", action="store_true", help="also run ours on uvloop (if installed)")
    ap.add_argument(
        "--prebuilt",
        action="store_true",
        help="also run the bare loop with its bodies built before its clock (the old harness)",
    )
    ap.add_argument(
        "--resume-args", nargs=argparse.REMAINDER, default=[], help="to bench_resume_scale"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    a = ap.parse_args(argv)
    a.names = a.only.split(",") if a.only else list(DEFAULT)
    a.names = [n for n in a.names if n not in a.skip.split(",")]
    if bad := [n for n in a.names if n not in NAMES]:
        ap.error(f"unknown benchmark(s) {bad}; known: {NAMES}")
    a.rounds = a.rounds or (1 if a.quick else 3)
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    command = "python -m tests.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    started, load0, psi0 = datetime.now(UTC), _doc.load(), _doc.cpu_pressure()
    sha = _doc.commit()  # of the code that runs, before anything may change the tree
    print(f"load average before: {load0}", flush=True)
    sections: list[Section] = []
    for name in a.names:
        print(f"{name} …", flush=True)
        sections.append(globals()[f"b_{name}"](a))
    load1, psi1 = _doc.load(), _doc.cpu_pressure()
    extra = profile(a) if a.profile else []
    text = _doc.render(
        sections,
        command=command.strip(),
        sha=sha,
        started=started,
        load_before=load0,
        load_after=load1,
        pressure=(psi0, psi1),
        rounds=a.rounds,
        extra=extra,
    )
    _doc.write_section(a.out, text)
    print(_doc.table(sections))
    print(f"load average after: {load1}; wrote {a.out}")


if __name__ == "__main__":
    main()
