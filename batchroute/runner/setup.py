"""What a run does before its first call and after its last: open and close the store (with
journal recovery), earlier runs' reservations, the catalogue, the API key's own limit.

Each function returns the notes it has for the run's summary; none keeps state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from batchroute._version import __version__
from batchroute.budget import Budget
from batchroute.catalog import Catalog
from batchroute.client import OpenRouterClient
from batchroute.errors import StoreError, UpstreamError
from batchroute.plan import Overrides, RunPlan, policy_of, strong_tiers
from batchroute.progress import Progress
from batchroute.reader import read_records
from batchroute.runner.book import Book
from batchroute.runner.reconcile import Reconciler, settle_earlier
from batchroute.runner.recover import recover_journal
from batchroute.runner.resume import Totals
from batchroute.runner.work import Control, RunOptions
from batchroute.spec import JobSpec
from batchroute.store import ResultStore
from batchroute.types import RunCounts, RunStatus
from batchroute.usd import usd

CLOSE_TIMEOUT_S = 5.0  # after the writer failed: the last write may wait this long, no more


@contextlib.contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic GC less often during a run, then restore the process's setting.

    Every record allocates a few dozen objects (rows, dicts, aiohttp internals), so the default
    gen-0 threshold of 700 runs a collection every few records; each pass stalls the event
    loop. Measured with tests/bench/bench_latency.py: 75-77 % → 81-83 % of concurrency /
    latency. Reference counting still frees almost everything at once, so memory is unchanged.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 20_000), max(old[1], 20), max(old[2], 20))
    try:
        yield
    finally:
        gc.set_threshold(*old)


def open_store(
    store: ResultStore, book: Book, spec: JobSpec, run_id: str, now: datetime
) -> list[str]:
    """Migrate, replay a killed run's journal, open this run's journal, close dead runs' rows,
    and start this run's row."""
    notes = []
    # Nothing to replay (the usual start): migrate, close and start in one transaction, one
    # commit and checkpoint instead of three (issue 11). Else the replay comes in between.
    replay = bool(book.journal.files())
    if replay:
        store.migrate()
        recovered = recover_journal(store)
        if recovered:
            notes.append(f"recovered {recovered} result(s) a killed run had not flushed")
    book.journal.open()
    path = str(spec.path or "")
    closed = store.begin_run(run_id, spec.name, path, now, __version__, migrate=not replay)
    if closed:
        notes.append(f"{closed} earlier run(s) had died; marked interrupted")
    return notes


def close_store(
    store: ResultStore,
    book: Book,
    control: Control,
    run_id: str,
    now: Callable[[], datetime],
) -> str | None:
    """Flush the last rows and close the run's row, whatever happened. If the file cannot be
    written (held by another process past the busy timeout), every row is still in the
    journal, which the next run replays: the note says so, and nothing waits again."""
    try:
        if book.writer_failed:
            store.write_timeout = min(store.write_timeout, CLOSE_TIMEOUT_S)
        book.flush_last()
        store.finish_run(run_id, control.status, book.counts, now())
    except StoreError as exc:
        if control.error is None:
            control.error = exc
        if book.journal.unwritten:  # the journal failed too (disk full): no such promise
            return (
                f"could not write to the database ({exc}) nor to {book.journal.path}: the rows "
                "not written are lost (their records are sent again; calls journaled in "
                "flight are booked at their reservation by the next run)"
            )
        return (
            f"could not write to the database ({exc}); every result is kept in "
            f"{book.journal.path}, and the next run writes it"
        )
    finally:
        book.journal.close()
    return None


class Early:
    """GET /models and GET /key, sent as the run's client opens: they go out beside its first
    store reads instead of one after the other after them (issue 11). Their answers are read
    by `load_catalog` and `check_key`; a run that stops before reading them drops them."""

    def __init__(self, client: OpenRouterClient) -> None:
        self.client = client
        self.models = asyncio.ensure_future(client.fetch_models())
        self.key = asyncio.ensure_future(client.key_limit_remaining())
        for task in (self.models, self.key):  # never "exception was never retrieved"
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._saving: asyncio.Future[None] | None = None
        # The start's writes, when the writer process makes them (runner/start.py): the saves
        # wait for them (the database may not exist until then).
        self.after: asyncio.Future[None] | None = None

    def save_later(self, save: Callable[..., object], *args: Any) -> None:
        """A store write the first call need not wait for (the catalogue's cache, the
        savings baseline): in a thread, after the ones asked before, while the run starts
        sending (issue 11: 0.05-0.1 s of the start). `saved` waits for them."""
        before = self._saving

        async def run() -> None:
            if before is not None:
                await before
            elif self.after is not None:
                await self.after
            await asyncio.to_thread(save, *args)

        self._saving = asyncio.ensure_future(run())
        self._saving.add_done_callback(lambda t: t.cancelled() or t.exception())  # if not saved

    async def saved(self) -> str | None:
        """Wait for the writes `save_later` took; a note if one failed (a file held past the
        busy timeout): neither is what a call costs, so the run goes on without it."""
        if self._saving is None:
            return None
        try:
            await self._saving
        except StoreError as exc:
            return f"could not save the catalogue's cache or the savings baseline: {exc}"
        return None


async def load_catalog(
    early: Early, store: ResultStore, now: Callable[[], datetime], *, cache: ResultStore | None
) -> tuple[Catalog, bool, str | None]:
    """Live /models (cached in `store`), else the copy cached in `cache` (None: there is none
    to read), else the one shipped in the package; whether it is live; and a note when it is
    not."""
    client = early.client
    try:
        raw = await early.models
        cat = Catalog(raw, source=client.base_url, fetched_at=now().isoformat())
        early.save_later(store.save_catalog, raw, now(), client.base_url)
        return cat, True, None
    except (UpstreamError, ValueError, KeyError) as exc:
        reason = type(exc).__name__
    cached = await asyncio.to_thread(cache.load_catalog) if cache is not None else None
    if cached is not None:
        raw, fetched = cached
        age = (now() - fetched.replace(tzinfo=None)).days
        note = f"prices from the cached catalogue, {age} days old ({reason})"
        return Catalog(raw, source="cache", fetched_at=fetched.isoformat()), False, note
    cat = Catalog.shipped()
    return cat, False, f"prices from the shipped catalogue of {cat.fetched_at} ({reason})"


async def reconcile_earlier_runs(
    client: OpenRouterClient, store: ResultStore, job_name: str, now: datetime
) -> tuple[str | None, bool]:
    """Replace earlier runs' reservations by real costs where /generation now knows them
    (`reconcile.settle_earlier`: the note, and whether the endpoint has no /generation)."""
    return await settle_earlier(client, store, job_name, now)


async def check_key(early: Early, budget: Budget) -> str:
    """The API key's own limit, if lower than what the cap leaves, rules (issue 8)."""
    remaining = await early.key
    if remaining is None:
        return ""
    budget.lower_ceiling(remaining)
    if budget.ceiling is not None and budget.ceiling < budget.cap:
        return f"; the API key has only {usd(remaining)} left, which rules"
    return ""


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def reserved_note(fixed: int, left: int, with_id: int) -> str | None:
    """What this run's reserved calls became: `left` of them stay booked at their reservation,
    of which `with_id` have a generation id the next run asks /generation about; the rest (a
    timeout, a cut call) stay an overcount. Worded as `batchroute report` says it."""
    if not fixed and not left:
        return None
    note = f"{fixed} call(s) booked at their reservation got their real cost from /generation"
    note += f"; {left} stay booked at it"
    if with_id:
        note += f": the next run asks /generation again for {_calls(with_id)}"
    if no_id := left - with_id:
        verbs = ("has", "stays", "its") if no_id == 1 else ("have", "stay", "their")
        note += (
            f"{';' if with_id else ':'} {_calls(no_id)} {verbs[0]} no generation id and "
            f"{verbs[1]} booked at {verbs[2]} reservation (an overcount, never an undercount)"
        )
    return note


def end_notes(reconciler: Reconciler, budget: Budget, book: Book) -> list[str]:
    """The summary's notes on what the run's calls cost and what it skipped."""
    notes = []
    counts = book.counts
    if note := reserved_note(reconciler.fixed, book.reserved_left, book.reserved_left_id):
        notes.append(note)
    if budget.overruns:
        notes.append(f"{budget.overruns} call(s) cost more than their reservation")
    if counts.duplicates:
        notes.append(
            f"{counts.duplicates} record(s) repeat an id already seen in this "
            "input: skipped (the first one counts); see runs.records_duplicate"
        )
    return notes


def end_status(short: int, deferred: int, budget: Budget) -> tuple[RunStatus, list[str]]:
    """How a run that was not stopped ends: records left for lack of budget, records whose
    chain was down, or completed; and the lines that say so."""
    lines = []
    if deferred:
        lines.append(
            f"{deferred} record(s) found every model of their chain unavailable: they "
            "stay pending, and the next run sends them"
        )
    if short:
        lines.append(
            f"daily budget reached: {usd(budget.spent)} of {usd(budget.limit)}; {short} "
            "record(s) did not fit and stay pending for the next run"
        )
    if short:
        return RunStatus.BUDGET_EXHAUSTED, lines
    return (RunStatus.UNAVAILABLE if deferred else RunStatus.COMPLETED), lines


def save_baseline(store: ResultStore, plan: RunPlan, run_id: str, now: datetime) -> None:
    """The `savings` view's yardstick for this run: the top tier's first model, at the prices
    this run's plan uses (a variable-priced router model has none, so no row)."""
    top = list(plan.tiers)[-1]
    model = plan.tiers[top].models[0]
    info = plan.info(model)
    if not info.variable_price:
        prices = (info.prompt, info.completion, info.request)
        store.save_baseline(run_id, plan.spec.name, top, model, prices, now)


def start_progress(
    tiers: Iterable[str],
    opts: RunOptions,
    overrides: Overrides,
    counts: Callable[[], RunCounts],
) -> Progress:
    """The run's progress display; its total is set by `input_known`."""
    grows = overrides.rerun_changed or overrides.limit is not None
    return Progress(
        tiers,
        bars=opts.bars,
        quiet=opts.quiet,
        monotonic=opts.monotonic,
        total_grows=grows,
        counts=counts,
    )


def input_known(progress: Progress, overrides: Overrides, totals: Totals) -> None:
    """The progress total, from the start's one pass over the input's keys: the input's
    records less those already final and the repeated ids, capped by --limit (a lower bound
    until the whole input is read with --limit, where invalid lines do not count against it,
    or --rerun-changed, where stale records add to it); and what the start line says of it."""
    to_send = totals.records - totals.final - totals.duplicates
    if overrides.limit is not None:
        to_send = min(to_send, overrides.limit)
    grows = overrides.rerun_changed or overrides.limit is not None
    progress.set_total(to_send)
    progress.intro = (
        f"; this input: {totals.records} records, {totals.final} already final (skipped), "
        f"{totals.duplicates} repeated ids, {to_send}{'+' if grows else ''} to send"
    )


async def calibrate(plan: RunPlan, notes: list[str]) -> RunPlan:
    """The plan with the cost dial calibrated off the event loop on the whole input, never
    only on the records left: a record's tier must not depend on how far an earlier run got
    (issue 12). λ goes into the run's notes."""
    spec, policy = plan.spec, policy_of(plan.spec)
    if policy is None:
        return plan
    records = read_records(spec.input, id_field=spec.id_field)
    plan = await asyncio.to_thread(plan.calibrated, records)
    if plan.dial is not None:
        notes.append(
            "cost dial " + ", ".join(f"{k} {v}" for k, v in policy.items())
            + f": λ {plan.dial.lam:.4g} (quality per USD) on the {spec.classifier} "
            f"predictions of {plan.scored} records; strong tiers {', '.join(strong_tiers(spec))}"
        )  # fmt: skip
    return plan
