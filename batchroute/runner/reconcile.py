"""Reconciliation: calls booked at their reservation get their real cost from GET /generation.

A call whose outcome is unknown (timed out, cut off, cancelled, answered without a usable cost)
may still be billed, so it is booked at its worst case (`cost_source = 'reserved'`). When its
generation id is known, the real figure is asked of GET /generation, with backoff and outside
the concurrency slots: during the run (`Reconciler`) and at the next run's start
(`reconcile_earlier`). A figure that never comes leaves the reservation: overcount, never
undercount.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from batchroute.budget import Budget, plausible_cost, quantize_usd
from batchroute.client import OpenRouterClient
from batchroute.errors import UpstreamError
from batchroute.runner.book import Book
from batchroute.runner.work import Trail
from batchroute.store import ResultStore
from batchroute.store.fixes import GenerationGap
from batchroute.types import CostFix, CostSource, GenerationCost, ReservedAttempt

POLL_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""Waits before each GET /generation of one call in a run (the record appears after a few
seconds; a slow provider's after minutes). After the last, the next run asks again."""

EARLIER_ROWS = 2_000  # reserved attempts of earlier runs asked about at a run's start, at most
EARLIER_WAIT_S = 30.0  # …for this long at most, before the first record goes out
CONCURRENT_GETS = 8  # /generation requests in flight at once: bookkeeping, not the job
PROOF_AGE = timedelta(hours=1)
"""A GET /generation 404 proves the endpoint missing only for an id whose call started this
long ago: OpenRouter answers 404 for a while right after a generation (openrouter-api.md
§4.2, pitfall 11: seconds; a slow provider's record, minutes)."""
GAP_MEMORY = timedelta(days=7)  # a proven gap is trusted this long, then proved again
NO_ENDPOINT = frozenset({404, 405, 501})  # what a GET of a path a server lacks answers


def real_cost(gc: GenerationCost | None) -> Decimal | None:
    """The bill /generation reports, if it is one that can be booked (finite, not negative).
    However large: a figure above what the call reserved is the bill, and booking it
    overcounts at worst (it used to be dropped above $10,000, leaving the reservation)."""
    billed = gc.billed if gc is not None else None
    if billed is None or not plausible_cost(billed):
        return None
    return quantize_usd(billed)


@dataclass(slots=True)
class Unsettled:
    """One attempt booked at its reservation whose generation id is known; `tier` is the one
    its record was routed to (the progress row its cost shows in)."""

    generation_id: str
    run_id: str
    job_name: str
    record_key: str
    attempt_no: int
    booked: Decimal
    trail: Trail
    tier: str
    model: str = ""  # the model asked for: a cost above `booked` raises its later reservations
    source: CostSource = CostSource.RESERVED  # or CATALOG: tokens at /models prices (audit4)
    listed: Decimal | None = None  # the call's worst case at list prices (`Pricer.learn`)
    served: str | None = None  # the model its answer named (native fallback: another)
    served_listed: Decimal | None = None  # that model's own list-price worst case, if known


class Reconciler:
    """Polls /generation for this run's reserved calls and books what it learns.

    Every task it starts is kept in `_tasks` and awaited or cancelled by `drain()`.
    """

    def __init__(
        self,
        client: OpenRouterClient,
        budget: Budget,
        book: Book,
        *,
        sleep: Callable[[float], Awaitable[None]],
        on_change: Callable[[], None],
        absent: bool = False,
    ) -> None:
        self._client, self._budget, self._book = client, budget, book
        # The base URL is proven to have no /generation (`settle_earlier`): nothing to poll,
        # the run's end does not wait; each call keeps its reservation or catalogue price.
        self.absent = absent
        self._sleep, self._on_change = sleep, on_change
        self._gets = asyncio.Semaphore(CONCURRENT_GETS)
        self._tasks: set[asyncio.Task[None]] = set()
        self.fixed = 0
        # `Pricer.learn` (set by the dispatcher): a correction above the reservation is a
        # ratio learnt like an answer's (docs/design-notes.md, "Learnt cost ratios outlive").
        self.learn: Callable[[str, Decimal, Decimal, Decimal | None], None] | None = None

    def add(self, u: Unsettled) -> None:
        if self.absent:
            return
        task = asyncio.get_running_loop().create_task(self._settle(u))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, u: Unsettled) -> None:
        for delay in POLL_DELAYS_S:
            await self._sleep(delay)
            gc = await self._ask(u.generation_id)
            cost = real_cost(gc)
            if gc is not None and cost is not None:
                self._apply(u, gc, cost)
                return

    async def _ask(self, generation_id: str) -> GenerationCost | None:
        async with self._gets:
            try:
                return await self._client.generation_cost(generation_id)
            except UpstreamError:  # 401, 429, 5xx: ask again later
                return None

    def _apply(self, u: Unsettled, gc: GenerationCost, cost: Decimal) -> None:
        if self.learn is not None and u.model:
            self.learn(u.model, cost, u.booked, u.listed)
            # A native fallback's bill teaches the model that served too, against its own
            # list price: the start's seed does so from the same row (`store.ratios`).
            if u.served and u.served != u.model and u.served_listed is not None:
                self.learn(u.served, cost, u.booked, u.served_listed)
        self._budget.correct(u.booked, cost)
        in_flight = not u.trail.booked
        if in_flight:  # its result row is still to be written: it carries the fix
            u.trail.cost += cost - u.booked
        self._book.fix(
            CostFix(
                u.run_id,
                u.job_name,
                u.record_key,
                u.attempt_no,
                cost,
                str(CostSource.GENERATION),
                usage_cost_usd=quantize_usd(gc.total_cost),
                upstream_cost_usd=None
                if gc.upstream_cost is None
                else quantize_usd(gc.upstream_cost),
                recompute_result=not in_flight,
                generation_id=u.generation_id,
                served_model=gc.model,
            ),
            cost - u.booked,
            u.tier,
            reserved=u.source is CostSource.RESERVED,
        )
        self.fixed += u.source is CostSource.RESERVED
        self._on_change()

    async def drain(self, timeout_s: float) -> None:
        """Give outstanding polls up to `timeout_s`, then cancel them (the next run asks).

        Cancelled itself while waiting, it still cancels every poll before it returns, so
        none outlives the run's HTTP session.
        """
        try:
            if self._tasks and timeout_s > 0:
                await asyncio.wait(set(self._tasks), timeout=timeout_s)
        finally:
            rest = [t for t in self._tasks if not t.done()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)


async def reconcile_earlier(
    client: OpenRouterClient, rows: Sequence[ReservedAttempt]
) -> list[CostFix]:
    """Ask /generation once for each reserved attempt of earlier runs; the fixes it can make."""
    gets = asyncio.Semaphore(CONCURRENT_GETS)

    async def one(row: ReservedAttempt) -> CostFix | None:
        async with gets:
            try:
                gc = await client.generation_cost(row.generation_id)
            except UpstreamError:
                return None
        cost = real_cost(gc)
        if gc is None or cost is None:
            return None
        return CostFix(
            row.run_id,
            row.job_name,
            row.record_key,
            row.attempt_no,
            cost,
            str(CostSource.GENERATION),
            usage_cost_usd=quantize_usd(gc.total_cost),
            upstream_cost_usd=None if gc.upstream_cost is None else quantize_usd(gc.upstream_cost),
            generation_id=row.generation_id,
            served_model=gc.model,
        )

    tasks = [asyncio.ensure_future(one(r)) for r in rows[:EARLIER_ROWS]]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, timeout=EARLIER_WAIT_S)
    finally:  # also when the run is cancelled meanwhile: no GET outlives the session
        late = [t for t in tasks if not t.done()]
        for t in late:  # the next run asks again
            t.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    return [f for t in tasks if not t.cancelled() and (f := t.result()) is not None]


async def settle_earlier(
    client: OpenRouterClient, store: ResultStore, job_name: str, now: datetime
) -> tuple[str | None, bool]:
    """Replace earlier runs' reservations (and catalogue prices) by real costs where
    /generation now knows them: (the note for the run, whether the base URL is proven to have
    no /generation, so that this run does not wait for it either).

    A base URL remembered without /generation is not asked (`generation_gaps`, for
    `GAP_MEMORY`). Else, when nothing could be reconciled, up to `fixes.PROBES` ids the
    endpoint handed out for calls started `PROOF_AGE` ago or more are probed: if each answers
    as a missing path does, the gap and its proof are remembered. The rows keep what they are
    booked at either way: overcount (a reservation), or all that can be known (tokens at the
    catalogue's dearest terms)."""
    rows = await asyncio.to_thread(store.reserved_attempts, job_name)
    if not rows:
        return None, False
    base, now = client.base_url, now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    gap, probes = await asyncio.to_thread(
        store.generation_gap, base, job_name, now - GAP_MEMORY, now - PROOF_AGE
    )
    if gap is not None:
        return (
            f"{base} has no GET /generation (proven {gap.proven_at:%Y-%m-%d %H:%M} UTC: HTTP "
            f"{gap.http_status} for {gap.generation_id}, a call of "
            f"{gap.generation_started_at:%Y-%m-%d %H:%M}): {len(rows)} earlier call(s) keep "
            "their reservation or catalogue price; this run does not wait for it"
        ), True
    fixes = await reconcile_earlier(client, rows)
    proof = None if fixes or not probes else await _prove(client, base, probes, now)
    changed = await asyncio.to_thread(store.apply_fixes, fixes, proof) if fixes or proof else 0
    note = (
        f"earlier runs left {len(rows)} call(s) booked at their reservation: "
        f"{changed} now have their real cost, {len(rows) - changed} stay reserved"
    )
    if proof is not None:
        note += (
            f"; {base} has no GET /generation (HTTP {proof.http_status} for {len(probes)} "
            f"id(s) it gave over {PROOF_AGE} ago): remembered, not asked again"
        )
    return note, proof is not None


async def _prove(
    client: OpenRouterClient, base: str, probes: list[tuple[str, datetime]], now: datetime
) -> GenerationGap | None:
    """The proof that `base` has no /generation: every probed id answered as a missing path
    does (no answer at all proves nothing)."""
    statuses = await asyncio.gather(*(client.generation_status(g) for g, _ in probes))
    if not all(s in NO_ENDPOINT for s in statuses):
        return None
    gid, started = probes[0]
    status = statuses[0]
    assert status is not None  # (in NO_ENDPOINT)
    return GenerationGap(base, now, gid, started, status)
