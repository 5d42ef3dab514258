"""The CLI's work behind its arguments: checks before any work, the texts it prints, the crash log.

Called only by `cli`, which owns argument parsing, the calls to run a job and exit codes. It
reads the API key (the one place) and files, and sends nothing.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from batchroute._version import __version__
from batchroute.catalog import Catalog
from batchroute.describe import describe_plan
from batchroute.errors import AuthError, ConfigError, SpecError
from batchroute.plan import Overrides, build_plan, classify_item
from batchroute.plan import render as render_record
from batchroute.quote import offline_catalog, quote, render_quote
from batchroute.reader import read_records
from batchroute.report import parse_since, render
from batchroute.report_html import HTML_PARTS, check_target, render_html
from batchroute.runner import RunReport
from batchroute.spec import DEFAULT_CLASSIFIER, JobSpec, PromptSpec
from batchroute.store import ResultStore
from batchroute.thresholds import for_tiers
from batchroute.types import ResumeState
from batchroute.unclassified import Unclassified
from batchroute.usd import exact, usd

DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def simulated_db(real: Path) -> Path:
    """Where `--simulate` writes unless `--db` says otherwise: beside the job's real database,
    e.g. results.duckdb → results.simulated.duckdb. Simulated rows and simulated spend must
    never make a real run skip records or stop at the cap."""
    return real.with_name(f"{real.stem}.simulated{real.suffix}")


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


def api_key(spec: JobSpec) -> str:
    """The only place the API key is read; it is never stored, logged or echoed."""
    env = spec.endpoint.api_key_env
    key = os.environ.get(env, "").strip()  # a trailing newline from `$(cat file)` is fine
    if not key:
        # Named only when it looks like a variable's name (UPPER_SNAKE): a token of letters and
        # digits pasted there passes the job file's check and would be echoed (the review).
        name = env if _ENV_NAME.fullmatch(env) else "the variable endpoint.api_key_env names"
        raise ConfigError(f"no API key: set {name}, or try it offline with --simulate")
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


def _not_duckdb(path: Path) -> str | None:
    """Why `path` (which exists) cannot be a DuckDB database, or None if it may be one."""
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if head == b"":  # the place a job's first run keeps for its new database (runner/start.py)
        return None
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


def check_run(spec: JobSpec, db: Path, *, write: bool) -> None:
    """Exit 2 before any work: the input file must be readable, the database usable."""
    problem = _input_problem(spec)
    if problem is not None:
        raise SpecError(problem, path=str(spec.path), key="input")
    _check_db(db, write=write)


def quote_text(
    spec: JobSpec,
    db: Path,
    *,
    budget_usd: Decimal | None,
    limit: int | None,
    retry_failed: bool,
    rerun_changed: bool,
    as_json: bool,
) -> str:
    """What `run --dry-run` prints: the quote, as a table or as JSON."""
    q = quote(
        spec,
        db_path=db,
        today=datetime.now(UTC).date(),
        budget_usd=budget_usd,
        limit=limit,
        retry_failed=retry_failed,
        rerun_changed=rerun_changed,
    )
    return (
        orjson.dumps(q.as_dict(), option=orjson.OPT_INDENT_2).decode()
        if as_json
        else render_quote(q)
    )


def validate_text(spec: JobSpec) -> str:
    """What `validate` prints: the resolved plan, and a warning if the input is not there yet."""
    _check_db(spec.database_path, write=False)
    lines = describe_plan(
        spec, spec.database_path, offline_catalog(spec.database_path)
    )  # SpecError → exit 2
    problem = _input_problem(spec)
    if problem is not None:  # may be written later, by whatever feeds the job: warn only
        lines.append(f"warning: {problem}; `run` would stop with exit 2")
    return "\n".join(lines)


def report_text(
    db: Path, *, by: str, since: str | None, job: str | None, fmt: str, html: Path | None = None
) -> str:
    """What `report` prints; with `html`, the HTML report is written there (never over data)."""
    if not db.exists():
        raise ConfigError(f"{db}: no such file")
    why = _not_duckdb(db)
    if why is not None:
        raise ConfigError(why)
    dims = [d.strip() for d in by.split(",") if d.strip()]
    start = parse_since(since, datetime.now(UTC).replace(tzinfo=None)) if since else None
    store = ResultStore(db)
    if html is None:
        return render(store.report(by=dims, since=start, job_name=job), fmt)
    check_target(html, db)
    parts = [store.report(by=b, since=start, job_name=job) for b in HTML_PARTS]
    try:
        html.write_text(render_html(*parts), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--html {html}: cannot write it ({exc.strerror or exc})") from None
    return f"batchroute: wrote the HTML report to {html}"


def run_problem(r: RunReport, spec: JobSpec) -> str | None:
    """The line on stderr for the error that stopped a run, if one did."""
    if isinstance(r.error, AuthError):  # OpenRouter only says e.g. "User not found."
        return (
            f"batchroute: the API key was rejected (HTTP 401: {r.error}); check "
            f"{spec.endpoint.api_key_env}. The run stopped; the rest stays pending."
        )
    if r.error is not None:
        return f"batchroute: {r.error}"
    return None


def summary(r: RunReport, code: int) -> str:
    c = r.counts
    return (
        f"batchroute: job {r.job_name} run {r.run_id} {r.status.value}: {c.done} done, "
        f"{c.failed} failed, {c.invalid} invalid, {c.pending} pending, {c.skipped} already "
        f"final; {usd(c.cost_usd)} spent; {r.elapsed_s:.1f} s; exit {code}"
        + (f"; {r.stale} stale (prompt changed, see --rerun-changed)" if r.stale else "")
        + (f"; {r.batches_in_flight} batch(es) in flight" if r.batches_in_flight else "")
        + _earlier_failures(r)
    )


def _earlier_failures(r: RunReport) -> str:
    failed = r.job_statuses.get("failed", 0) - r.counts.failed
    invalid = r.job_statuses.get("invalid", 0) - r.counts.invalid
    if failed <= 0 and invalid <= 0:
        return ""
    return f"; earlier runs left {failed} failed and {invalid} invalid (see --retry-failed)"


def ledger_line(ledger: dict[str, Any]) -> str:
    """What the simulator billed for a `--simulate` run: a bill, so to the last digit
    (`usd.exact`), to be compared with the database's own sum."""
    return (
        f"simulator ledger: {ledger['calls']} billed calls, "
        f"${exact(Decimal(ledger['total_cost_usd']))} (no real money was spent)"
    )


def simulator_banner(scenario: str, seed: int) -> str:
    """What `simulate` says on stderr once it listens (its URL goes to stdout)."""
    return f"OpenRouter simulator ({scenario}, seed {seed}); any API key works; Ctrl-C stops it"


def listen_error(exc: OSError, host: str, port: int) -> ConfigError:
    """Why `simulate` could not listen (the bind failed: nothing was served yet)."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"--port {port}: port {port} on {host} is already in use (another "
            "simulator?); choose another, or --port 0 for any free port"
        )
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def crash_line(exc: BaseException, log_dir: Path | None, secret: str | None) -> str:
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


def _classify_spec(
    path: Path, field: str | None, job: JobSpec | None, classifier: str | None
) -> JobSpec:
    """The job `classify` routes with: the given one on this input, else the default tiers
    and routing table with the prompt in `field` (default "text")."""
    if field is not None and (not field or any(c in field for c in ".[]{}")):
        raise ConfigError(f"--field {field!r}: give the name of one top-level field of a record")
    prompt = {"user": "{" + (field or "text") + "}"}
    if job is None:
        return JobSpec.model_validate(
            {
                "name": "classify",
                "input": path,
                "prompt": prompt,
                "classifier": classifier or DEFAULT_CLASSIFIER,
                "request": {"max_tokens": 256},
                "budget": {"daily_usd": 1},
            }
        )
    update: dict[str, Any] = {"input": path}
    if field is not None:  # the record's own text, without the job's system prompt
        update["prompt"] = PromptSpec.model_validate(prompt)
    if classifier is not None:  # a heuristic has no score: the job's cost dial then rests
        update["classifier"] = classifier
    return job.model_copy(update=update)


def classify_lines(
    path: Path,
    *,
    field: str | None,
    job: JobSpec | None,
    classifier: str | None,
    tally: Unclassified | None = None,
) -> Iterator[bytes]:
    """`batchroute classify`: one JSON line per input line, routed as `run` routes it (the
    plan's classification, cost dial and experiment); a bad line gets a line with its error,
    and is noted in `tally`.

    Raises:
        ConfigError: once every line is read, if no record has a field the prompt needs.
    """
    tally = tally or Unclassified(path, field, job=job is not None)
    problem = (
        "no such file" if not path.exists()
        else "is a folder, not a file" if path.is_dir()
        else "cannot be read (no permission)" if not os.access(path, os.R_OK)
        else None
    )  # fmt: skip
    if problem is not None:
        raise ConfigError(f"{path}: {problem}")
    if path.is_file():
        yield from _classified(path, field=field, job=job, classifier=classifier, tally=tally)
        return
    # A pipe (`cat x | batchroute classify /dev/stdin`) is read once into a private file: the
    # cost dial reads the input twice (calibrate, then route), a pipe gives its lines once.
    with tempfile.TemporaryDirectory(prefix="batchroute-classify-") as tmp:
        spool = Path(tmp) / "input.jsonl"
        with path.open("rb") as src, spool.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        yield from _classified(spool, field=field, job=job, classifier=classifier, tally=tally)


def _classified(
    path: Path,
    *,
    field: str | None,
    job: JobSpec | None,
    classifier: str | None,
    tally: Unclassified,
) -> Iterator[bytes]:
    spec = _classify_spec(path, field, job, classifier)
    catalog = offline_catalog(spec.database_path) if job is not None else Catalog.shipped()
    plan = build_plan(spec, catalog, ResumeState(), Overrides())
    plan = plan.calibrated(read_records(path, id_field=spec.id_field))
    needs = spec.prompt.fields()
    for rec in read_records(path, id_field=spec.id_field):
        messages = render_record(spec, rec)
        tally.seen += 1
        out: dict[str, Any]
        if isinstance(messages, str):
            out = {"key": rec.key, "line": rec.line_no, "error": messages}
            has = sorted(rec.fields or ())
            lacks = None if rec.fields is None else min(needs.difference(has), default=None)
            tally.note(rec.line_no, messages, lacks, has)
        else:
            item = classify_item(spec, plan.params, rec, messages, plan.dial)
            c = item.cls
            out = {
                "key": rec.key,
                "line": rec.line_no,
                "task_type": c.task_type,
                "complexity": c.complexity,
                "tier": item.tier,
                "score": c.score,
                # per job tier, the quality the dial expects there (a scoring classifier only)
                "tier_quality": None
                if c.tier_quality is None
                else dict(zip(spec.tiers, for_tiers(c.tier_quality, len(spec.tiers)), strict=True)),
                "reason": c.reason,
                "arm": item.arm,
            }
        yield orjson.dumps(out) + b"\n"
    tally.check_all_lacking()
