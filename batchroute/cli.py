"""Command line: parse arguments, call one library entry point, print, map errors to exit codes.

Exit codes (design §3): 0 all records final and ok; 1 unexpected error; 2 bad job file, bad
arguments or missing API key; 3 daily budget reached (records left pending); 4 finished but
some records failed or were invalid; 5 another run holds the database lock; 6 the provider was
unreachable or failing (records left pending); 130 interrupted.

Bad arguments, files and folders are found here, before any work, and reported as one line
naming the path, line or key (exit 2). Anything else unexpected is caught once, in `main`: one
line on stderr naming a log file that holds the traceback (exit 1), never a raw traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
import yaml

from batchroute._version import __version__
from batchroute.errors import (
    AuthError,
    BatchrouteError,
    ConfigError,
    CreditsExhausted,
    LockHeld,
    RequestRejected,
    SpecError,
    StoreError,
)
from batchroute.quote import describe_plan, quote, render_quote
from batchroute.report import money, parse_since, render
from batchroute.runner import RunOptions, RunReport, run_job
from batchroute.spec import MAX_DAILY_USD, JobSpec, load_spec
from batchroute.store import ResultStore
from batchroute.types import RunStatus

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET, EXIT_FAILED, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_UNAVAILABLE = 6
EXIT_INTERRUPTED = 130
SIM_KEY = "sk-or-v1-simulator"  # --simulate needs no real key; the simulator accepts any
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def simulated_db(real: Path) -> Path:
    """Where `--simulate` writes unless `--db` says otherwise: beside the job's real database,
    e.g. results.duckdb → results.simulated.duckdb. Simulated rows and simulated spend must
    never make a real run skip records or stop at the cap."""
    return real.with_name(f"{real.stem}.simulated{real.suffix}")


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite amount in USD")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the budget must be positive")
    if value > MAX_DAILY_USD:
        raise argparse.ArgumentTypeError(
            f"{text!r} is more than ${MAX_DAILY_USD:,} for a day; a typo?"
        )
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0-65535 (0: any free port)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batchroute",
        description="Run LLM batch jobs on OpenRouter cheaply and safely.",
    )
    p.add_argument("--version", action="version", version=f"batchroute {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run or resume a job")
    run.add_argument("job", type=Path, help="the job file (YAML)")
    run.add_argument("--simulate", action="store_true", help="use the built-in simulator")
    # No defaults here: given without --simulate they are an error, not silently ignored.
    run.add_argument("--scenario", help="simulator scenario (with --simulate; default clean)")
    run.add_argument("--seed", type=int, help="simulator seed (with --simulate; default 0)")
    run.add_argument(
        "--db",
        type=Path,
        help="DuckDB file (default: the job's output.database; with --simulate, "
        "<name>.simulated.duckdb beside it)",
    )
    run.add_argument("--limit", type=_positive_int, help="process at most N new records")
    run.add_argument("--dry-run", action="store_true", help="quote the cost; send nothing")
    run.add_argument("--json", action="store_true", help="with --dry-run: print JSON")
    run.add_argument("--retry-failed", action="store_true", help="redo failed/invalid records")
    run.add_argument(
        "--rerun-changed",
        action="store_true",
        help="redo records whose prompt or parameters changed since they were done",
    )
    run.add_argument("--budget", type=_decimal, metavar="USD", help="today's cap for this run")
    run.add_argument("--quiet", action="store_true", help="print only errors and the summary")

    rep = sub.add_parser("report", help="cost and outcome report from a DuckDB file")
    rep.add_argument("db", type=Path)
    rep.add_argument("--job", help="only this job")
    rep.add_argument("--by", default="day", help="comma list of day,tier,model,task,job,run")
    rep.add_argument("--since", help="e.g. 7d, 12h or 2026-11-01")
    rep.add_argument("--format", choices=("table", "csv", "json"), default="table")

    sim = sub.add_parser("simulate", help="serve the OpenRouter simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=8787)
    sim.add_argument("--scenario", default="clean", help="clean, flaky, chaos, slow or a file")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--latency-ms", type=float, help="fixed latency for every call")

    val = sub.add_parser("validate", help="check a job file and print the resolved plan")
    val.add_argument("job", type=Path)
    return p


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _api_key(spec: JobSpec) -> str:
    """The only place the API key is read; it is never stored, logged or echoed."""
    env = spec.endpoint.api_key_env
    key = os.environ.get(env, "").strip()  # a trailing newline from `$(cat file)` is fine
    if not key:
        raise ConfigError(f"no API key: set {env}, or try it offline with --simulate")
    for i, ch in enumerate(key, 1):
        if not "!" <= ch <= "~":  # printable ASCII, no space: nothing else can be a header
            kind = (
                "a line break"
                if ch in "\r\n"
                else "a space"
                if ch.isspace()
                else "a control character"
                if ch.isascii()
                else "a non-ASCII character"
            )
            raise ConfigError(
                f"the API key in {env} holds {kind} (character {i} of {len(key)}); a key is "
                "one line of printable ASCII. Check how it is set (the key is not shown)"
            )
    return key


def _load_scenario(name: str) -> Any:
    from batchroute.simulator import load_scenario

    try:
        return load_scenario(name)
    except (ValueError, TypeError, KeyError, OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--scenario {name}: {exc}") from None


@contextlib.contextmanager
def _simulator(scenario: str, seed: int) -> Iterator[Any]:
    from batchroute.simulator import SimulatorThread

    with SimulatorThread(_load_scenario(scenario), seed=seed) as sim:
        yield sim


def _not_duckdb(path: Path) -> str | None:
    """Why `path` (which exists) cannot be a DuckDB database, or None if it may be one."""
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if head[8:12] != DUCKDB_MAGIC:
        return f"{path} is not a DuckDB database (not written by batchroute, or damaged)"
    return None


def _check_db(db: Path, *, write: bool) -> None:
    """Exit 2 before any work if the database cannot be what it should be: an existing DuckDB
    file or a new one, in a folder that exists and can be written (the run also puts its
    .lock, .journal and .wal files there)."""
    if write:
        folder = db.parent
        existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
        if existing != folder and existing.is_dir():
            raise ConfigError(
                f"the database folder {folder} does not exist: create it "
                f"(mkdir -p {folder}) or choose another path with --db or output.database"
            )
        if not existing.is_dir():
            raise ConfigError(f"the database folder {folder} is not a folder: {existing} is a file")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"cannot write in the database folder {folder} (read-only or no permission); "
                "choose another path with --db or output.database"
            )
    if db.exists() or db.is_symlink():
        why = _not_duckdb(db)
        if why is not None:
            raise ConfigError(f"{why}; choose another path with --db or output.database")
        if write and not os.access(db, os.W_OK):
            raise ConfigError(f"cannot write to the database {db}: the file is read-only")


def _input_problem(spec: JobSpec) -> str | None:
    path = spec.input
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if not path.exists():
        return f"input file not found: {path}"
    if not path.is_file():
        return f"{path} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"cannot read the input file {path} (no permission)"
    return None


def _summary(r: RunReport, code: int) -> str:
    c = r.counts
    return (
        f"batchroute: job {r.job_name} run {r.run_id} {r.status.value}: {c.done} done, "
        f"{c.failed} failed, {c.invalid} invalid, {c.pending} pending, {c.skipped} already "
        f"final; ${money(c.cost_usd)} spent; {r.elapsed_s:.1f} s; exit {code}"
        + (f"; {r.stale} stale (prompt changed, see --rerun-changed)" if r.stale else "")
        + _earlier_failures(r)
    )


def _earlier_failures(r: RunReport) -> str:
    failed = r.job_statuses.get("failed", 0) - r.counts.failed
    invalid = r.job_statuses.get("invalid", 0) - r.counts.invalid
    if failed <= 0 and invalid <= 0:
        return ""
    return f"; earlier runs left {failed} failed and {invalid} invalid (see --retry-failed)"


def _exit_code(r: RunReport) -> int:
    if isinstance(r.error, AuthError | RequestRejected):  # the key or the request is wrong
        return EXIT_USAGE
    if r.status is RunStatus.INTERRUPTED:
        return EXIT_INTERRUPTED
    if r.status is RunStatus.BUDGET_EXHAUSTED or isinstance(r.error, CreditsExhausted):
        return EXIT_BUDGET
    if r.status is RunStatus.UNAVAILABLE:  # records wait for the provider to come back
        return EXIT_UNAVAILABLE
    if r.status is RunStatus.FAILED:
        return EXIT_ERROR
    # "All records final and ok" is about the job, not this run: failed or invalid records
    # left by an earlier run (not retried without --retry-failed) still mean exit 4.
    return EXIT_FAILED if r.job_has_failures else EXIT_OK


def _cmd_run(a: argparse.Namespace) -> int:
    if not a.simulate:
        given = [f"--{n}" for n in ("scenario", "seed") if getattr(a, n) is not None]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with "
                "--simulate; without it the job's real endpoint would be called (add "
                "--simulate, or leave them out)"
            )
    spec = load_spec(a.job)
    db = a.db or (simulated_db(spec.database_path) if a.simulate else spec.database_path)
    a.log_dir = db.parent  # a crash log goes beside the database
    problem = _input_problem(spec)
    if problem is not None:
        raise SpecError(problem, path=str(spec.path), key="input")
    _check_db(db, write=not a.dry_run)
    if a.simulate and a.db is None and not a.quiet:
        _say(
            f"batchroute: --simulate writes to {db}, not to the job's database "
            f"{spec.database_path} (--db chooses another file)"
        )
    if a.dry_run:
        q = quote(
            spec,
            db_path=db,
            today=datetime.now(UTC).date(),
            budget_usd=a.budget,
            limit=a.limit,
            retry_failed=a.retry_failed,
            rerun_changed=a.rerun_changed,
        )
        print(
            orjson.dumps(q.as_dict(), option=orjson.OPT_INDENT_2).decode()
            if a.json
            else render_quote(q)
        )
        return EXIT_OK
    with contextlib.ExitStack() as stack:
        if a.simulate:
            sim = stack.enter_context(_simulator(a.scenario or "clean", a.seed or 0))
            base_url, key = sim.base_url, SIM_KEY
        else:
            base_url, key = None, _api_key(spec)
            a.secret = key  # kept out of a crash log, should it appear in a message
        opts = RunOptions(
            api_key=key,
            base_url=base_url,
            db_path=db,
            limit=a.limit,
            retry_failed=a.retry_failed,
            rerun_changed=a.rerun_changed,
            budget_usd=a.budget,
            bars=sys.stderr.isatty() and not a.quiet,
            quiet=a.quiet,
            log=None if not a.quiet else (lambda _line: None),
        )
        report = run_job(spec, opts)
        code = _exit_code(report)
        if isinstance(report.error, AuthError):  # OpenRouter only says e.g. "User not found."
            _say(
                f"batchroute: the API key was rejected (HTTP 401: {report.error}); check "
                f"{spec.endpoint.api_key_env}. The run stopped; the rest stays pending."
            )
        elif report.error is not None:
            _say(f"batchroute: {report.error}")
        print(_summary(report, code), flush=True)
        if a.simulate and not a.quiet:
            ledger = sim.ledger()
            _say(
                f"simulator ledger: {ledger['calls']} billed calls, "
                f"${money(Decimal(ledger['total_cost_usd']))} (no real money was spent)"
            )
        return code


def _cmd_validate(a: argparse.Namespace) -> int:
    spec = load_spec(a.job)
    a.log_dir = spec.database_path.parent
    _check_db(spec.database_path, write=False)
    lines = describe_plan(spec, spec.database_path)  # SpecError → exit 2
    problem = _input_problem(spec)
    if problem is not None:  # may be written later, by whatever feeds the job: warn only
        lines.append(f"warning: {problem}; `run` would stop with exit 2")
    print("\n".join(lines))
    return EXIT_OK


def _cmd_simulate(a: argparse.Namespace) -> int:
    from batchroute.simulator import serve

    sc = _load_scenario(a.scenario)
    if a.latency_ms is not None:
        sc = sc.with_latency(a.latency_ms)

    def ready(url: str) -> None:
        print(url, flush=True)
        _say(
            f"OpenRouter simulator ({a.scenario}, seed {a.seed}); any API key works; "
            "Ctrl-C stops it"
        )

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(a.host, a.port, sc, seed=a.seed, on_ready=ready))
    except OSError as exc:  # bind failed: nothing was served yet
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--port {a.port}: port {a.port} on {a.host} is already in use (another "
                "simulator?); choose another, or --port 0 for any free port"
            ) from None
        raise ConfigError(f"cannot listen on {a.host}:{a.port}: {exc.strerror or exc}") from None
    return EXIT_OK


def _cmd_report(a: argparse.Namespace) -> int:
    a.log_dir = a.db.parent
    if not a.db.exists():
        raise ConfigError(f"{a.db}: no such file")
    why = _not_duckdb(a.db)
    if why is not None:
        raise ConfigError(why)
    by = [d.strip() for d in a.by.split(",") if d.strip()]
    since = parse_since(a.since, datetime.now(UTC).replace(tzinfo=None)) if a.since else None
    data = ResultStore(a.db).report(by=by, since=since, job_name=a.job)
    print(render(data, a.format))
    return EXIT_OK


COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "simulate": _cmd_simulate,
    "report": _cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `batchroute` command; returns the exit code.

    Never lets a traceback reach the terminal: what no handler below expects is written to a
    crash log (beside the database when known, else the system temp folder) and named in one
    line on stderr, exit 1.
    """
    args = argparse.Namespace()
    try:
        args = _parser().parse_args(argv)
        return _dispatch(args)
    except KeyboardInterrupt:
        _say("batchroute: interrupted")
        return EXIT_INTERRUPTED
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the one catch-all
        _say(_crash_line(exc, getattr(args, "log_dir", None), getattr(args, "secret", None)))
        return EXIT_ERROR


def _crash_line(exc: BaseException, log_dir: Path | None, secret: str | None) -> str:
    """Write the traceback to a log file; return the one line that names it."""

    def hide(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    summary = hide(" ".join(str(exc).split()))
    summary = f"{type(exc).__name__}: {summary}" if summary else type(exc).__name__
    if len(summary) > 200:
        summary = summary[:197] + "..."
    stamp = datetime.now(UTC)
    body = hide(
        f"batchroute {__version__} unexpected error at {stamp.isoformat()}\n"
        f"argv: {sys.argv!r}\n\n" + "".join(traceback.format_exception(exc))
    )
    name = f"batchroute-crash-{os.getpid()}-{stamp:%Y%m%dT%H%M%SZ}.log"
    folders = [d for d in (log_dir, Path(tempfile.gettempdir())) if d is not None]
    problems = []
    for folder in folders:
        path = folder / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
        except OSError as err:
            problems.append(f"{path}: {err.strerror or err}")
            continue
        return f"batchroute: unexpected error ({summary}); details in {path}"
    return (
        f"batchroute: unexpected error ({summary}); no log could be written ({'; '.join(problems)})"
    )


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; map the errors batchroute raises on purpose to exit codes."""
    try:
        return COMMANDS[args.command](args)
    except LockHeld as exc:
        _say(f"batchroute: {exc}")
        return EXIT_LOCKED
    except (SpecError, ConfigError, AuthError) as exc:
        _say(f"batchroute: {exc}")
        return EXIT_USAGE
    except StoreError as exc:
        _say(f"batchroute: {exc}")
        return EXIT_USAGE if args.command == "report" else EXIT_ERROR
    except BatchrouteError as exc:
        _say(f"batchroute: {exc}")
        return EXIT_ERROR
