"""Command line: parse arguments, call one library entry point, print, map errors to exit codes.

Exit codes (design §3): 0 all records final and ok; 1 unexpected error; 2 bad job file, bad
arguments or missing API key; 3 daily budget reached (records left pending); 4 finished but
some records failed or were invalid; 5 another run holds the database lock; 6 the provider was
unreachable or failing (records left pending); 7 Batch API batches still in flight (the next
run collects them; not an error for cron); 130 interrupted; 141 stdout closed early
(`report DB | head -1`), quietly, as a Unix tool that SIGPIPE ends: for the commands that only
print (report, classify, a dry run); a real run keeps the code of its outcome.

What to check before any work and what to print is in `commands`. Anything unexpected is caught
once, in `main`: one line on stderr naming a crash log (exit 1), never a raw traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from batchroute import commands
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
from batchroute.runner import RunOptions, RunReport, run_job
from batchroute.spec import MAX_DAILY_USD, load_spec
from batchroute.types import RunStatus
from batchroute.unclassified import Unclassified
from batchroute.usd import usd

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET, EXIT_FAILED, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_UNAVAILABLE, EXIT_BATCHES = 6, 7
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell shows for `yes | head -1`
SIM_KEY = "sk-or-v1-simulator"  # --simulate needs no real key; the simulator accepts any


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
            f"{text!r} is more than {usd(MAX_DAILY_USD)} for a day; a typo?"
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
    run.add_argument("--wait", action="store_true", help="wait for batches (else exit 7)")

    rep = sub.add_parser("report", help="cost and outcome report from a DuckDB file")
    rep.add_argument("db", type=Path)
    rep.add_argument("--job", help="only this job")
    rep.add_argument("--by", default="day", help="comma list: day,tier,model,task,job,run,arm,lane")
    rep.add_argument("--since", help="e.g. 7d, 12h or 2026-11-01")
    rep.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")
    rep.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report instead")

    sim = sub.add_parser("simulate", help="serve the OpenRouter simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=8787)
    sim.add_argument("--scenario", default="clean", help="clean, flaky, chaos, slow or a file")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--latency-ms", type=float, help="fixed latency for every call")

    val = sub.add_parser("validate", help="check a job file and print the resolved plan")
    val.add_argument("job", type=Path)

    cls = sub.add_parser("classify", help="print each record's task, tier and score as JSON")
    cls.add_argument("input", type=Path, help="the records (JSONL)")
    cls.add_argument("--field", help="the record field holding the prompt (default: the "
                     "job's prompt, rendered; without --job: text)")  # fmt: skip
    cls.add_argument("--job", type=Path, help="route with this job's tiers, routing and dial")
    cls.add_argument("--classifier", choices=("heuristic", "learned"), help="default: the job's")
    return p


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _StdoutClosed(Exception):
    """Whoever read stdout has gone (`| head -1`): not a crash, the end of the output."""


class _StdoutFailed(Exception):
    """stdout cannot take the output (a full disk, `> /dev/full`): one line, not a crash."""


def _drop_stdout() -> None:
    with contextlib.suppress(OSError):  # nor a second error when Python flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _out(text: str) -> None:
    """Print to stdout; a reader that left raises _StdoutClosed, any other failed write
    _StdoutFailed (only a write to stdout does: an OSError elsewhere is still a crash)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _drop_stdout()
        raise _StdoutClosed from None
    except OSError as exc:
        _drop_stdout()
        raise _StdoutFailed(exc.strerror or str(exc)) from None


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
    if r.batches_in_flight:  # submitted and paid for: the next run collects them
        return EXIT_BATCHES
    # "All records final and ok" is about the job, not this run: failed or invalid records
    # left by an earlier run (not retried without --retry-failed) still mean exit 4.
    return EXIT_FAILED if r.job_has_failures else EXIT_OK


def _check_simulate_options(a: argparse.Namespace) -> None:
    if not a.simulate:
        given = [f"--{n}" for n in ("scenario", "seed") if getattr(a, n) is not None]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with "
                "--simulate; without it the job's real endpoint would be called (add "
                "--simulate, or leave them out)"
            )


def _options(a: argparse.Namespace, db: Path, key: str, base_url: str | None) -> RunOptions:
    return RunOptions(
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
        wait=a.wait,
    )


def _cmd_run(a: argparse.Namespace) -> int:
    _check_simulate_options(a)
    spec = load_spec(a.job)
    db = a.db or (commands.simulated_db(spec.database_path) if a.simulate else spec.database_path)
    a.log_dir = db.parent  # a crash log goes beside the database
    commands.check_run(spec, db, write=not a.dry_run)
    if a.simulate and a.db is None and not a.quiet:
        _say(
            f"batchroute: --simulate writes to {db}, not to the job's database "
            f"{spec.database_path} (--db chooses another file)"
        )
    if a.dry_run:
        text = commands.quote_text(
            spec,
            db,
            budget_usd=a.budget,
            limit=a.limit,
            retry_failed=a.retry_failed,
            rerun_changed=a.rerun_changed,
            as_json=a.json,
        )
        _out(text)
        return EXIT_OK
    with contextlib.ExitStack() as stack:
        if a.simulate:
            sim = stack.enter_context(_simulator(a.scenario or "clean", a.seed or 0))
            base_url, key = sim.base_url, SIM_KEY
        else:
            base_url, key = None, commands.api_key(spec)
            a.secret = key  # kept out of a crash log, should it appear in a message
        report = run_job(spec, _options(a, db, key, base_url))
        code = _exit_code(report)
        problem = commands.run_problem(report, spec)
        if problem is not None:
            _say(problem)
        # The exit code says what happened to the run (3, 4, ...); a stdout that fails loses the
        # summary line, not that: the outcome is also in the database.
        try:
            _out(commands.summary(report, code))
        except _StdoutClosed:  # the reader left (`| head`): quietly, as any Unix tool
            pass
        except _StdoutFailed as exc:  # e.g. a full disk: said once, never a crash log
            _say(f"batchroute: the summary could not be written to stdout ({exc})")
        if a.simulate and not a.quiet:
            _say(commands.ledger_line(sim.ledger()))
        return code


def _cmd_validate(a: argparse.Namespace) -> int:
    spec = load_spec(a.job)
    a.log_dir = spec.database_path.parent
    _out(commands.validate_text(spec))
    return EXIT_OK


def _cmd_classify(a: argparse.Namespace) -> int:
    job = load_spec(a.job) if a.job is not None else None
    tally = Unclassified(a.input, a.field, job=job is not None)
    lines = commands.classify_lines(
        a.input, field=a.field, job=job, classifier=a.classifier, tally=tally
    )
    out = sys.stdout.buffer
    try:
        for line in lines:
            out.write(line)
        out.flush()
    except BrokenPipeError:  # `| head`: the rest was not classified; as `report`, exit 141
        _drop_stdout()
        raise _StdoutClosed from None
    except OSError as exc:  # a full disk: the rest was not written; one line, exit 1
        _drop_stdout()
        raise _StdoutFailed(exc.strerror or str(exc)) from None
    if tally.bad:  # as a run that leaves invalid records: each has its error line on stdout
        for text in tally.lines():
            _say(text)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_simulate(a: argparse.Namespace) -> int:
    from batchroute.simulator import serve

    sc = _load_scenario(a.scenario)
    if a.latency_ms is not None:
        sc = sc.with_latency(a.latency_ms)

    def ready(url: str) -> None:
        _out(url)
        _say(commands.simulator_banner(a.scenario, a.seed))

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(a.host, a.port, sc, seed=a.seed, on_ready=ready, handle_signals=True))
    except OSError as exc:  # bind failed: nothing was served yet
        raise commands.listen_error(exc, a.host, a.port) from None
    return EXIT_OK


def _cmd_report(a: argparse.Namespace) -> int:
    a.log_dir = a.db.parent
    _out(commands.report_text(a.db, by=a.by, since=a.since, job=a.job, fmt=a.format, html=a.html))
    return EXIT_OK


COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "simulate": _cmd_simulate,
    "report": _cmd_report,
    "classify": _cmd_classify,
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
    except _StdoutClosed:  # the reader left (| head): no crash log
        return EXIT_PIPE
    except _StdoutFailed as exc:  # a full disk, `> /dev/full`: the output is lost, no crash
        _say(f"batchroute: the output could not be written to stdout ({exc})")
        return EXIT_ERROR
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the one catch-all
        _say(
            commands.crash_line(exc, getattr(args, "log_dir", None), getattr(args, "secret", None))
        )
        return EXIT_ERROR


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
