"""Runner: the only module that wires the stages together.

reader → resume filter → classifier → router → per-tier queues → workers (budget → limiter →
client → outcome) → one store writer. It owns concurrency, shutdown and the run's bookkeeping;
every decision it takes is made from exception *types* raised by the stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import orjson

from batchroute import __version__
from batchroute.budget import Budget, Reservation, prompt_token_bound, worst_case_cost
from batchroute.catalog import Catalog, ModelInfo
from batchroute.classifier import classify
from batchroute.client import OpenRouterClient
from batchroute.errors import (
    AuthError,
    BatchrouteError,
    CreditsExhausted,
    DailyCapReached,
    FatalUpstreamError,
    InputError,
    QualityFailed,
    RetryableError,
    SpecError,
    UpstreamError,
)
from batchroute.limiter import Limiter
from batchroute.lock import RunLock
from batchroute.progress import Progress
from batchroute.prompt import fingerprint, render_messages, request_params
from batchroute.reader import read_records
from batchroute.router import TierPlan, choose_tier, resolve_tiers
from batchroute.spec import JobSpec
from batchroute.store import Journal, ResultStore
from batchroute.types import (
    TASK_TYPES,
    AttemptOutcome,
    AttemptRow,
    Classification,
    Completion,
    CostSource,
    Record,
    RecordStatus,
    ResultRow,
    RunCounts,
    RunStatus,
)

FLUSH_EVERY_S = 1.0  # design §7: commit at least every second (the journal covers kill -9)
FLUSH_ROWS = 5_000  # flush early when this many result rows wait (bounds memory)
CENT = Decimal("1e-12")  # the store keeps money at 12 decimal places
# Failures whose answer was generated (so billed) but whose usage never arrived: their cost is
# asked of GET /generation, waiting this long before each try (design §4, cost_source).
UNREAD_BODY = frozenset({"malformed_response", "connection", "timeout"})
GENERATION_POLL_S = (0.0, 0.5, 1.0, 2.0, 4.0)


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp takes in the store."""
    return datetime.now(UTC).replace(tzinfo=None)


def money(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass
class RunOptions:
    """Per-invocation settings (the CLI fills these; tests inject clocks and sleeps)."""

    api_key: str = ""
    base_url: str | None = None  # overrides the job's endpoint (e.g. the simulator)
    db_path: Path | None = None
    limit: int | None = None
    retry_failed: bool = False
    rerun_changed: bool = False
    budget_usd: Decimal | None = None
    bars: bool = False
    quiet: bool = False
    handle_signals: bool = True
    now: Callable[[], datetime] = utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    monotonic: Callable[[], float] = time.monotonic
    jitter_seed: int | None = None
    log: Callable[[str], None] | None = None


@dataclass
class RunReport:
    """What a run did; the CLI turns it into a summary line and an exit code."""

    run_id: str
    job_name: str
    db_path: Path
    status: RunStatus
    counts: RunCounts
    elapsed_s: float
    stale: int = 0
    tiers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    error: BatchrouteError | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Item:
    record: Record
    messages: list[dict[str, str]]
    fp: str
    cls: Classification
    tier: str
    explicit: bool


@dataclass(slots=True)
class _Trail:
    """What happened to one record so far, across models and tiers."""

    attempts: int = 0
    escalations: int = 0
    cost: Decimal = Decimal(0)
    last_error: UpstreamError | None = None
    escalate_now: bool = False


@dataclass(slots=True)
class _Call:
    """One call's outcome: a usable completion, or the error that says what to do next."""

    model: str  # the model asked for (the one that served may differ: native fallback)
    started: datetime
    latency_ms: int
    cost: Decimal
    source: CostSource
    completion: Completion | None = None
    error: UpstreamError | None = None


def prepare_record(spec: JobSpec, params: dict[str, Any], rec: Record) -> _Item | str:
    """Render and classify one record; a string says why the record is invalid."""
    if rec.fields is None:
        return rec.error or "invalid line"
    try:
        messages = render_messages(spec.prompt, rec.fields)
    except InputError as exc:
        return exc.reason
    fields = rec.fields
    if spec.task_field and fields.get(spec.task_field) in TASK_TYPES:
        cls, explicit = Classification(str(fields[spec.task_field]), "medium", "task_field"), True
    elif spec.task:
        cls, explicit = Classification(spec.task, "medium", "job.task"), True
    else:
        system = messages[0]["content"] if len(messages) > 1 else ""
        cls, explicit = classify(messages[-1]["content"], system=system), False
    tier = choose_tier(cls, spec, explicit_task=explicit)
    return _Item(rec, messages, fingerprint(messages, params), cls, tier, explicit)


def _prompt_bound(messages: list[dict[str, str]]) -> int:
    return prompt_token_bound(m["content"] for m in messages)


class Runner:
    """Runs one job once. Use `await Runner(spec, opts).run()` or `run_job`."""

    def __init__(self, spec: JobSpec, opts: RunOptions) -> None:
        self.spec = spec
        self.opts = opts
        self.db_path = opts.db_path or spec.database_path
        self.run_id = uuid.uuid4().hex[:16]
        self.counts = RunCounts()
        self.params = request_params(spec.request)
        self.store = ResultStore(self.db_path)
        self.status = RunStatus.RUNNING
        self.error: BatchrouteError | None = None
        self.notes: list[str] = []
        self.stale = 0
        self._stopping = False
        self._interrupted = False
        self._results: list[ResultRow] = []
        self._attempts: list[AttemptRow] = []
        self._flush_now = asyncio.Event()
        self._journal = Journal(self.db_path)
        self._closing = False
        self._rng = random.Random(opts.jitter_seed)
        self._cooled: dict[str, float] = {}
        self._streak: dict[str, int] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._feeder: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- setup
    def _log(self, line: str) -> None:
        if self.opts.log is not None:
            self.opts.log(line)
        elif hasattr(self, "progress"):
            self.progress.log(line)

    async def _load_catalog(self, client: OpenRouterClient) -> Catalog:
        """Live /models, else the copy cached in the store, else the one shipped in the package."""
        try:
            raw = await client.fetch_models()
            cat = Catalog(raw, source=client.base_url, fetched_at=self.opts.now().isoformat())
            await asyncio.to_thread(self.store.save_catalog, raw, self.opts.now(), client.base_url)
            return cat
        except (UpstreamError, OSError, ValueError, KeyError) as exc:
            reason = f"{type(exc).__name__}"
        cached = await asyncio.to_thread(self.store.load_catalog)
        if cached is not None:
            raw, fetched = cached
            age = (self.opts.now() - fetched.replace(tzinfo=None)).days
            self.notes.append(f"prices from the cached catalogue, {age} days old ({reason})")
            return Catalog(raw, source="cache", fetched_at=fetched.isoformat())
        cat = Catalog.shipped()
        self.notes.append(f"prices from the shipped catalogue of {cat.fetched_at} ({reason})")
        return cat

    def _check_models(self) -> None:
        for plan in self.plans.values():
            if not plan.models:
                raise SpecError(
                    "no model in the catalogue meets this `cheapest` tier's criteria",
                    key=f"tiers.{plan.name}",
                )
            for m in plan.models:
                info = self.catalog.get(m)
                if info is None:
                    self.notes.append(
                        f"model {m!r} is not in the catalogue: budgeted at the "
                        "highest known price; fallback will skip it if it fails"
                    )
                elif info.variable_price:
                    raise SpecError(
                        f"{m} has a variable price and cannot be budgeted under a cap",
                        key=f"tiers.{plan.name}",
                    )

    def _model_info(self, model: str) -> ModelInfo:
        info = self.catalog.get(model)
        return info if info is not None else self._dearest

    # ------------------------------------------------------------------- run
    async def run(self) -> RunReport:
        start = self.opts.monotonic()
        if not self.spec.input.is_file():
            raise SpecError(
                f"input file not found: {self.spec.input}", path=str(self.spec.path), key="input"
            )
        with self._signals(), RunLock(self.db_path):
            await asyncio.to_thread(self._open_store)
            try:
                await self._run_pipeline()
            except BatchrouteError as exc:
                self.error = self.error or exc
                self.status = RunStatus.FAILED
                raise
            finally:
                if self.status is RunStatus.RUNNING:
                    self.status = RunStatus.FAILED
                await asyncio.to_thread(self._close_store)
        return RunReport(
            self.run_id,
            self.spec.name,
            self.db_path,
            self.status,
            self.counts,
            self.opts.monotonic() - start,
            self.stale,
            {t: p.models for t, p in self.plans.items()},
            self.error,
            self.notes,
        )

    def _open_store(self) -> None:
        self.store.migrate()
        recovered = self.store.recover_journal()
        if recovered:
            self.notes.append(f"recovered {recovered} result(s) a killed run had not flushed")
        self._journal.open()
        closed = self.store.close_stale_runs()
        if closed:
            self.notes.append(f"{closed} earlier run(s) had died; marked interrupted")
        self.store.start_run(
            self.run_id, self.spec.name, str(self.spec.path or ""), self.opts.now(), __version__
        )

    def _close_store(self) -> None:
        # Whatever happened, keep what was done: flush, then close the run row.
        results, attempts = self._take_rows()
        if (results or attempts) and self._journal.rotate():
            self.store.write(results, attempts)
            self._journal.flushed()
        self.store.finish_run(self.run_id, self.status, self.counts, self.opts.now())
        self._journal.close()

    async def _run_pipeline(self) -> None:
        spec, opts = self.spec, self.opts
        base_url = opts.base_url or spec.endpoint.base_url
        statuses = (
            {RecordStatus.DONE}
            if opts.retry_failed
            else {RecordStatus.DONE, RecordStatus.FAILED, RecordStatus.INVALID}
        )
        self.final = await asyncio.to_thread(self.store.final_keys, spec.name, statuses=statuses)
        cap = opts.budget_usd if opts.budget_usd is not None else spec.budget.daily_usd
        scope = spec.name if spec.budget.scope == "job" else None
        spent = await asyncio.to_thread(self.store.spent_on, opts.now().date(), job_name=scope)
        self.budget = Budget(cap, spent)
        self._budget_cond = asyncio.Condition()
        self.limiter = Limiter(spec.limits.requests_per_minute, spec.limits.per_model_rpm)
        async with OpenRouterClient(
            base_url,
            opts.api_key,
            timeout_s=spec.limits.timeout_s,
            title=spec.endpoint.title,
            referer=spec.endpoint.referer,
            max_connections=spec.limits.concurrency,
        ) as client:
            self.client = client
            self.catalog = await self._load_catalog(client)
            self._dearest = max(
                self.catalog.models.values(), key=lambda m: (m.prompt + m.completion, m.id)
            )
            self.plans = resolve_tiers(spec, self.catalog)
            self._check_models()
            self.progress = Progress(
                self.plans, bars=opts.bars, quiet=opts.quiet, monotonic=opts.monotonic
            )
            for note in self.notes:
                self._log(f"note: {note}")
            for name, plan in self.plans.items():
                if spec.tiers[name].cheapest:  # chosen at run start: say which (issue 4)
                    self._log(f"tier {name}: cheapest by catalogue price: {', '.join(plan.models)}")
            self._log(
                f"run {self.run_id}: job {spec.name}, {len(self.final)} records already "
                f"final, today's spend ${spent:.6f} of ${cap}"  # not "$0E-12"
            )
            try:
                await self._pump()
            finally:
                self.progress.close()
        self._finish_status()

    def _finish_status(self) -> None:
        if self.status is not RunStatus.RUNNING:
            return
        self.status = RunStatus.COMPLETED

    async def _pump(self) -> None:
        spec = self.spec
        self._global_slots = asyncio.Semaphore(spec.limits.concurrency)
        self.queues: dict[str, asyncio.Queue[_Item | None]] = {
            t: asyncio.Queue(spec.limits.queue_size) for t in self.plans
        }
        writer = asyncio.create_task(self._writer())
        try:
            async with asyncio.TaskGroup() as tg:
                for tier in self.plans:
                    n = self._worker_count(tier)
                    self._workers += [tg.create_task(self._worker(tier)) for _ in range(n)]
                self._feeder = tg.create_task(self._feed())
        except ExceptionGroup as group:
            first: BaseException = group
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            raise first from group  # one clear error for the CLI, not a task-group traceback
        finally:
            self._closing = True
            self._flush_now.set()
            await writer

    # ---------------------------------------------------------- stop & signals
    def _stop(self, status: RunStatus, error: BatchrouteError | None = None) -> None:
        """Stop dispatching; records not yet sent become `pending`."""
        if not self._stopping:
            self._stopping = True
            self.status = status
            self.error = error
            if error is not None:
                self._log(f"stopping: {error}")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM stop the run gracefully from its very start (store opening and
        catalogue fetch included), not only once records flow."""
        loop = asyncio.get_running_loop()
        sigs = (signal.SIGINT, signal.SIGTERM) if self.opts.handle_signals else ()
        for sig in sigs:
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if not self._interrupted:
            self._interrupted = True
            self._stop(RunStatus.INTERRUPTED)
            grace = self.spec.limits.grace_s
            self._log(
                f"interrupted: finishing calls in flight (up to {grace:g} s); "
                "interrupt again to stop at once"
            )
            asyncio.get_running_loop().call_later(grace, self._cancel_in_flight)
        else:
            self._cancel_in_flight()

    def _cancel_in_flight(self) -> None:
        for task in (*self._workers, self._feeder):
            if task is not None and not task.done():
                task.cancel()

    # ------------------------------------------------------------------ feeder
    async def _feed(self) -> None:
        spec, limit = self.spec, self.opts.limit
        taken = 0
        for n, rec in enumerate(read_records(spec.input, id_field=spec.id_field), 1):
            if self._interrupted or (self._stopping and self.status is RunStatus.FAILED):
                break
            if limit is not None and taken >= limit:
                break
            self.counts.seen += 1
            item = self._prepare(rec)
            if item is not None:
                taken += 1
                if self._stopping:
                    self._pending(item)
                else:
                    await self.queues[item.tier].put(item)
            if n % 128 == 0:
                self.progress.tick(self.counts)
                await asyncio.sleep(0)  # let workers run while the queues have room
        for tier, q in self.queues.items():
            for _ in range(self._worker_count(tier)):
                await q.put(None)

    def _worker_count(self, tier: str) -> int:
        plan, lim = self.plans[tier], self.spec.limits.concurrency
        return min(plan.concurrency or lim, lim)

    def _prepare(self, rec: Record) -> _Item | None:
        """Resume filter, rendering and classification; None when nothing is to be sent."""
        item = prepare_record(self.spec, self.params, rec)
        if isinstance(item, str):
            self._invalid(rec, item)
            return None
        if rec.key in self.final:
            old = self.final[rec.key]
            changed = old is not None and old != item.fp
            self.stale += changed
            if not (changed and self.opts.rerun_changed):
                self.counts.skipped += 1
                return None
        return item

    # ----------------------------------------------------------------- workers
    async def _worker(self, tier: str) -> None:
        q = self.queues[tier]
        while True:
            item = await q.get()
            if item is None:
                return
            if self._stopping:
                self._pending(item)
                continue
            trail = _Trail()
            try:
                await self._process(item, trail)
            except asyncio.CancelledError:
                self._pending(item, trail)  # keeps what this run already paid for it
                raise

    async def _process(self, item: _Item, trail: _Trail) -> None:
        tier = item.tier
        while True:
            plan = self.plans[tier]
            nxt = self.spec.next_tier(tier)
            can_escalate = trail.escalations < self.spec.limits.max_escalations and nxt is not None
            call = await self._try_chain(item, plan, trail, can_escalate)
            if call is not None and call.completion is not None:
                self._done(item, tier, trail, call)
                return
            if self._stopping:  # budget, fatal error or interrupt: try again next run
                self._pending(item, trail)
                return
            if not can_escalate or nxt is None:
                self._failed(item, tier, trail)
                return
            tier = nxt
            trail.escalations += 1

    def _chain(self, plan: TierPlan) -> list[str]:
        now = self.opts.monotonic()
        usable = [m for m in plan.models if self._cooled.get(m, 0) <= now]
        return usable or list(plan.models)  # all cooled: try them anyway rather than fail blind

    async def _try_chain(
        self, item: _Item, plan: TierPlan, trail: _Trail, can_escalate: bool
    ) -> _Call | None:
        """Walk the tier's chain; a successful call, or None when the chain is done with."""
        chain = self._chain(plan)
        for i, model in enumerate(chain):
            last_model = i == len(chain) - 1
            for attempt in range(1, self.spec.limits.max_attempts + 1):
                if self._stopping:
                    return None
                call = await self._call(item, plan, model, trail)
                if call is None:  # the budget said no before anything was sent
                    return None
                if call.error is None:
                    self._streak.pop(model, None)  # cooldown counts *consecutive* failures
                    return call
                err = trail.last_error = call.error
                retry = isinstance(err, RetryableError) and attempt < self.spec.limits.max_attempts
                outcome = self._decide(err, retry, last_model, can_escalate)
                self._note_attempt(item, plan.name, model, trail, call, outcome)
                if outcome is AttemptOutcome.RETRY:
                    await self.opts.sleep(self._backoff(attempt, err))
                    continue
                if outcome is AttemptOutcome.FATAL:
                    return None
                self._penalise(model, err)
                if outcome is AttemptOutcome.ESCALATE:
                    return None
                break  # next model
        return None

    def _decide(
        self, err: UpstreamError, retry: bool, last_model: bool, can_escalate: bool
    ) -> AttemptOutcome:
        if isinstance(err, FatalUpstreamError):
            status = (
                RunStatus.BUDGET_EXHAUSTED
                if isinstance(err, CreditsExhausted)
                else (RunStatus.FAILED)
            )
            self._stop(status, err)
            return AttemptOutcome.FATAL
        if retry and (err.retry_after or 0) <= self.spec.limits.backoff_max_s:
            return AttemptOutcome.RETRY
        if isinstance(err, QualityFailed) and can_escalate:
            return AttemptOutcome.ESCALATE  # design §6: a weak answer goes to a stronger tier
        if not last_model:
            return AttemptOutcome.FALLBACK
        return AttemptOutcome.ESCALATE if can_escalate else AttemptOutcome.FAILED

    def _backoff(self, attempt: int, err: UpstreamError) -> float:
        lim = self.spec.limits
        delay = min(lim.backoff_max_s, lim.backoff_base_s * 2.0 ** (attempt - 1))
        delay = delay / 2 + self._rng.random() * delay / 2  # "equal jitter"
        return max(delay, err.retry_after or 0.0)

    def _penalise(self, model: str, err: UpstreamError) -> None:
        """Cool a model down after repeated availability failures (not per-record rejections)."""
        now = self.opts.monotonic()
        if isinstance(err, DailyCapReached):
            wait = (err.reset_at - time.time()) if err.reset_at else self.spec.limits.cooldown_s
            self._cooled[model] = now + max(wait, self.spec.limits.cooldown_s)
            return
        if isinstance(err, QualityFailed) or err.status in (400, 403, 413, 422):
            return
        self._streak[model] = self._streak.get(model, 0) + 1
        if self._streak[model] >= self.spec.limits.cooldown_after:
            self._cooled[model] = now + self.spec.limits.cooldown_s
            self._streak[model] = 0
            self._log(f"cooling down {model} for {self.spec.limits.cooldown_s:g} s")

    # ------------------------------------------------------------- one call
    async def _reserve(self, amount: Decimal) -> Reservation | None:
        async with self._budget_cond:
            while True:
                if self._stopping:
                    return None
                r = self.budget.try_reserve(amount)
                if r is not None:
                    return r
                if self.budget.in_flight == 0:
                    self._stop(RunStatus.BUDGET_EXHAUSTED)
                    self._log(
                        f"daily budget reached: ${self.budget.spent} of "
                        f"${self.budget.cap}; the rest stays pending for the next run"
                    )
                    self._budget_cond.notify_all()
                    return None
                await self._budget_cond.wait()

    async def _settle(self, r: Reservation, actual: Decimal) -> None:
        async with self._budget_cond:
            self.budget.settle(r, actual)
            self._budget_cond.notify_all()

    async def _call(self, item: _Item, plan: TierPlan, model: str, trail: _Trail) -> _Call | None:
        """Reserve, pace, send, settle. None if the budget is exhausted (nothing was sent)."""
        info = self._model_info(model)
        bound = _prompt_bound(item.messages)
        worst = money(worst_case_cost(info, bound, self.spec.request.max_tokens))
        async with self._global_slots:
            r = await self._reserve(worst)
            if r is None:
                return None
            payload: dict[str, Any] = {
                "model": model,
                "messages": item.messages,
                **self.params,
                "usage": {"include": True},
                **plan.extra_body(model),
            }
            started = self.opts.now()
            try:
                await self.limiter.acquire(model)
                t0 = self.opts.monotonic()
                completion = await self.client.complete(payload)
            except UpstreamError as err:
                latency = int((self.opts.monotonic() - t0) * 1000)
                try:
                    known, source = await self._failed_cost(err)
                except asyncio.CancelledError:
                    self.budget.settle(r, worst)
                    raise
                # Billed but never told: keep the worst case on today's books (cap stays safe).
                await self._settle(r, worst if known is None else known)
                cost = known or Decimal(0)
                trail.attempts += 1
                trail.cost += cost
                return _Call(model, started, latency, cost, source, error=err)
            except asyncio.CancelledError:
                # Stopped at once (second Ctrl-C): the provider may still bill this call, so
                # keep its worst case on today's books; the record stays pending.
                self.budget.settle(r, worst)
                raise
            latency = int((self.opts.monotonic() - t0) * 1000)
            cost, source = self._completion_cost(completion, info)
            await self._settle(r, cost)
        trail.attempts += 1
        trail.cost += cost
        call = _Call(model, started, latency, cost, source, completion=completion)
        problem = self._quality_problem(completion)
        if problem is not None:
            call.completion = None
            call.error = QualityFailed(
                problem.replace("_", " "),
                model=model,
                status=200,
                error_type=problem,
                cost=cost,
                generation_id=completion.generation_id,
            )
        return call

    async def _failed_cost(self, err: UpstreamError) -> tuple[Decimal | None, CostSource]:
        """What a failed call cost: as the error reported it, else for an answer whose body was
        cut off (billed, usage unread) what GET /generation says; None if it never says."""
        if err.cost is not None:
            return money(err.cost), CostSource.OPENROUTER
        if err.generation_id is None or err.error_type not in UNREAD_BODY:
            return Decimal(0), CostSource.NONE
        for delay in GENERATION_POLL_S:  # the stats appear a moment after the call
            await self.opts.sleep(delay)
            try:
                cost = await self.client.generation_cost(err.generation_id)
            except UpstreamError:
                break
            if cost is not None:
                return money(cost), CostSource.GENERATION
        self._log(f"cost of {err.generation_id} unknown (no /generation answer); booked at worst")
        return None, CostSource.NONE

    def _completion_cost(self, c: Completion, info: ModelInfo) -> tuple[Decimal, CostSource]:
        if c.usage.cost is not None:
            return money(c.usage.cost), CostSource.OPENROUTER
        served = self.catalog.get(c.model) or info
        return money(served.cost(c.usage.prompt_tokens, c.usage.completion_tokens)), (
            CostSource.CATALOG
        )

    def _quality_problem(self, c: Completion) -> str | None:
        checks = self.spec.quality
        if "empty" in checks and not (c.content or "").strip():
            return "empty_content"
        if "length" in checks and c.finish_reason == "length":
            return "finish_length"
        if "json" in checks and self.spec.request.wants_json():
            try:
                orjson.loads(c.content or "")
            except orjson.JSONDecodeError:
                return "invalid_json"
        return None

    # ------------------------------------------------------------------ rows
    def _attempt_row(
        self,
        item: _Item,
        tier: str,
        model: str,
        attempt_no: int,
        call: _Call,
        outcome: AttemptOutcome,
    ) -> None:
        err, c = call.error, call.completion
        row = AttemptRow(
            self.run_id,
            self.spec.name,
            item.record.key,
            attempt_no,
            tier,
            model,
            call.started,
            call.latency_ms,
            (err.status or None) if err else (c.http_status if c else None),
            outcome,
            err.error_type if err else None,
            str(err)[:500] if err else None,
            call.cost,
            call.source,
            err.generation_id if err else (c.generation_id if c else None),
        )
        self._attempts.append(row)
        self._journal.append(row)
        self.counts.cost_usd += call.cost

    def _note_attempt(
        self,
        item: _Item,
        tier: str,
        model: str,
        trail: _Trail,
        call: _Call,
        outcome: AttemptOutcome,
    ) -> None:
        self._attempt_row(item, tier, model, trail.attempts, call, outcome)

    def _result(self, item: _Item | Record, status: RecordStatus, **kw: Any) -> None:
        rec = item.record if isinstance(item, _Item) else item
        row = ResultRow(
            self.spec.name,
            rec.key,
            self.run_id,
            rec.line_no,
            status,
            created_at=self.opts.now(),
            **kw,
        )
        if isinstance(item, _Item):
            row.task_type, row.complexity = item.cls.task_type, item.cls.complexity
            row.classifier, row.request_fp = item.cls.reason, item.fp
            row.tier = row.tier or item.tier
        self._results.append(row)
        self._journal.append(row)
        if len(self._results) >= FLUSH_ROWS:
            self._flush_now.set()
        if hasattr(self, "progress"):
            self.progress.record(row.tier or "-", status, row.cost_usd)

    def _invalid(self, rec: Record, reason: str) -> None:
        self.counts.invalid += 1
        self._result(rec, RecordStatus.INVALID, error_type="invalid_input", error_message=reason)

    def _pending(self, item: _Item, trail: _Trail | None = None) -> None:
        self.counts.pending += 1
        t = trail or _Trail()
        self._result(
            item,
            RecordStatus.PENDING,
            cost_usd=t.cost,
            attempts=t.attempts,
            escalations=t.escalations,
        )

    def _failed(self, item: _Item, tier: str, trail: _Trail) -> None:
        self.counts.failed += 1
        e = trail.last_error
        self._result(
            item,
            RecordStatus.FAILED,
            tier=tier,
            cost_usd=trail.cost,
            attempts=trail.attempts,
            escalations=trail.escalations,
            error_type=e.error_type if e else "no_model",
            error_message=str(e)[:500] if e else "no model could be tried",
            model_requested=e.model if e else None,
        )

    def _done(self, item: _Item, tier: str, trail: _Trail, call: _Call) -> None:
        c = call.completion
        assert c is not None
        asked = call.model
        self._attempt_row(item, tier, asked, trail.attempts, call, AttemptOutcome.OK)
        self.counts.done += 1
        self._result(
            item,
            RecordStatus.DONE,
            tier=tier,
            model_requested=asked,
            model_served=c.model,
            provider=c.provider,
            output=c.content,
            finish_reason=c.finish_reason,
            prompt_tokens=c.usage.prompt_tokens,
            completion_tokens=c.usage.completion_tokens,
            cost_usd=trail.cost,
            cost_source=call.source,
            latency_ms=call.latency_ms,
            attempts=trail.attempts,
            escalations=trail.escalations,
            generation_id=c.generation_id,
        )

    # ------------------------------------------------------------------ writer
    def _take_rows(self) -> tuple[list[ResultRow], list[AttemptRow]]:
        results, attempts = self._results, self._attempts
        self._results, self._attempts = [], []
        return results, attempts

    async def _writer(self) -> None:
        """The one writer: flush at least every second, or early when rows pile up.

        It stops after the flush that follows `_closing`; the last rows are written by
        `_close_store`, so nothing done is lost even when the pipeline fails.
        """
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), FLUSH_EVERY_S)
            self._flush_now.clear()
            results, attempts = self._take_rows()
            if results or attempts:
                self._journal.rotate()  # same loop step as _take_rows: the same rows
                try:
                    await asyncio.to_thread(self.store.write, results, attempts)
                except BatchrouteError as exc:
                    self._stop(RunStatus.FAILED, exc)
                    self._cancel_in_flight()
                    raise
                self._journal.flushed()


async def run_job_async(spec: JobSpec, opts: RunOptions) -> RunReport:
    """Run (or resume) a job to the end, the budget, or an interrupt."""
    return await Runner(spec, opts).run()


def run_job(spec: JobSpec, opts: RunOptions) -> RunReport:
    """Synchronous entry point used by the CLI."""
    return asyncio.run(run_job_async(spec, opts))


__all__ = ["AuthError", "RunOptions", "RunReport", "Runner", "run_job", "run_job_async"]
