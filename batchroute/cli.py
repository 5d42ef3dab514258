"""Command line: parse arguments, call one library entry point, print, map errors to exit codes.

Exit codes (design §3): 0 all records final and ok; 1 unexpected error; 2 bad job file, bad
arguments or missing API key; 3 daily budget reached (records left pending); 4 finished but
some records failed or were invalid; 5 another run holds the database lock; 6 the provider was
unreachable or failing (records left pending); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from batchroute import __version__
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
from batchroute.spec import JobSpec, load_spec
from batchroute.store import ResultStore
from batchroute.types import RunStatus

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET, EXIT_FAILED, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_UNAVAILABLE = 6
EXIT_INTERRUPTED = 130
SIM_KEY = "sk-or-v1-simulator"  # --simulate needs no real key; the simulator accepts any


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the budget must be positive")
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
    run.add_argument("--scenario", default="clean", help="simulator scenario (with --simulate)")
    run.add_argument("--seed", type=int, default=0, help="simulator seed (with --simulate)")
    run.add_argument("--db", type=Path, help="DuckDB file (default: the job's output.database)")
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
    sim.add_argument("--port", type=int, default=8787)
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
    key = os.environ.get(spec.endpoint.api_key_env, "").strip()
    if not key:
        raise ConfigError(
            f"no API key: set {spec.endpoint.api_key_env}, or try it offline with --simulate"
        )
    return key


@contextlib.contextmanager
def _simulator(scenario: str, seed: int) -> Iterator[Any]:
    from batchroute.simulator import SimulatorThread, load_scenario

    try:
        sc = load_scenario(scenario)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--scenario: {exc}") from None
    with SimulatorThread(sc, seed=seed) as sim:
        yield sim


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
    spec = load_spec(a.job)
    db = a.db or spec.database_path
    if a.dry_run:
        q = quote(
            spec,
            db_path=db,
            today=datetime.now(UTC).date(),
            budget_usd=a.budget,
            limit=a.limit,
            retry_failed=a.retry_failed,
        )
        print(
            orjson.dumps(q.as_dict(), option=orjson.OPT_INDENT_2).decode()
            if a.json
            else render_quote(q)
        )
        return EXIT_OK
    with contextlib.ExitStack() as stack:
        if a.simulate:
            sim = stack.enter_context(_simulator(a.scenario, a.seed))
            base_url, key = sim.base_url, SIM_KEY
        else:
            base_url, key = None, _api_key(spec)
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
    print("\n".join(describe_plan(spec, spec.database_path)))  # SpecError → exit 2
    return EXIT_OK


def _cmd_simulate(a: argparse.Namespace) -> int:
    from batchroute.simulator import load_scenario, serve

    try:
        sc = load_scenario(a.scenario)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--scenario: {exc}") from None
    if a.latency_ms is not None:
        sc = sc.with_latency(a.latency_ms)

    def ready(url: str) -> None:
        print(url, flush=True)
        _say(
            f"OpenRouter simulator ({a.scenario}, seed {a.seed}); any API key works; "
            "Ctrl-C stops it"
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.host, a.port, sc, seed=a.seed, on_ready=ready))
    return EXIT_OK


def _cmd_report(a: argparse.Namespace) -> int:
    if not a.db.exists():
        raise StoreError(f"{a.db}: no such file")
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
    """Entry point of the `batchroute` command; returns the exit code."""
    args = _parser().parse_args(argv)
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
    except KeyboardInterrupt:
        _say("batchroute: interrupted")
        return EXIT_INTERRUPTED
