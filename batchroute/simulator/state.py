"""Mutable state of one simulator app: the scenario in force, seeded RNGs, billing and the ledger.

No HTTP here; the handlers in `app.py` read and update it. All methods are called on the app's
event loop (SimulatorThread hops onto that loop before reading).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
from aiohttp import web

from batchroute.catalog import Catalog
from batchroute.simulator import responses as R
from batchroute.simulator.batch_store import BatchStore
from batchroute.simulator.scenario import (
    RANDOM_FAULTS,
    Distribution,
    Lognormal,
    ModelOverride,
    Normal,
    Scenario,
    ScriptStep,
)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@cache
def shipped_catalog() -> Catalog:
    """The shipped catalogue, parsed once per process."""
    return Catalog.shipped()


@dataclass(frozen=True, slots=True)
class Effective:
    """The scenario resolved for one model (per-model overrides applied)."""

    latency_ms: float | Lognormal
    tokens_per_s: float
    completion_tokens: Distribution
    cumulative: tuple[tuple[float, str], ...]  # (upper bound, fault) for one uniform draw


@dataclass(slots=True)
class Generation:
    """One generation the simulator served (billed or not).

    `usage_reported` is False when the answer carried no `usage` (the `no_usage` fault): the
    client can only learn what it cost from /generation.
    """

    id: str
    model: str
    provider: str
    bill: R.Bill
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    streamed: bool
    created: float
    latency_ms: int
    generation_time_ms: int
    delivered: bool = True
    usage_reported: bool = True

    @property
    def cost(self) -> Decimal:
        """Everything the user pays for it: the balance charge plus, under BYOK, the upstream."""
        return self.bill.total


def draw(rng: random.Random, dist: float | Distribution) -> float:
    """One sample of a fixed value, a normal or a lognormal distribution."""
    if isinstance(dist, int | float):
        return float(dist)
    if isinstance(dist, Normal):
        return rng.gauss(dist.mean, dist.sd) if dist.sd else dist.mean
    return rng.lognormvariate(math.log(dist.median), dist.sigma)


def _resolve(scenario: Scenario, model: str) -> Effective:
    override: ModelOverride | None = scenario.models.get(model)
    given = override.model_fields_set if override is not None else set()

    def pick(name: str) -> Any:
        return getattr(override if name in given else scenario, name)

    acc = 0.0
    cumulative = []
    for fault in RANDOM_FAULTS:
        rate = float(pick(f"rate_{fault}"))
        if rate > 0:
            acc += rate
            cumulative.append((acc, fault))
    return Effective(
        latency_ms=pick("latency_ms"),
        tokens_per_s=float(pick("tokens_per_s")),
        completion_tokens=pick("completion_tokens"),
        cumulative=tuple(cumulative),
    )


class SimState:
    """Everything a running simulator remembers between requests."""

    def __init__(self, scenario: Scenario, *, seed: int, clock: Clock, sleep: Sleep) -> None:
        self.catalog = shipped_catalog()
        self.seed = seed
        self._clock = clock
        self.offset = 0.0  # POST /sim/advance moves the clock forward (batch tests)
        self.sleep = sleep
        self.started = clock()
        self.scenario = scenario
        self._effective: dict[str, Effective] = {}
        self._cursor: dict[str, int] = {}
        self._seen: dict[tuple[str, bytes], int] = {}
        self._rpm: dict[str, deque[float]] = {}
        self.generations: dict[str, Generation] = {}
        self.billed: list[Generation] = []
        self.billed_total = Decimal(0)  # everything the user pays: balance + own provider keys
        self.balance_total = Decimal(0)  # charged to the OpenRouter balance (/key `usage`)
        self.byok_total = Decimal(0)  # billed by providers to the user's keys (`byok_usage`)
        self.models_cache: dict[str, bytes] = {}
        self.in_flight = 0  # chat requests being answered now (a hanging call counts)
        self._search_prices: dict[str, Decimal] | None = None
        self.batches = BatchStore()  # in the app, not a connection: outlives every client
        self.batches_submitted = 0  # accepted (202) batch submissions

    def clock(self) -> float:
        """The simulator's now: the injected clock plus what `advance` added."""
        return self._clock() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (batches progress, /generation delays pass)."""
        self.offset += seconds

    def set_scenario(self, scenario: Scenario) -> None:
        """Replace the scenario; scripts restart from their first entry. Ledger is kept."""
        self.scenario = scenario
        self._effective.clear()
        self._cursor.clear()

    def effective(self, model: str) -> Effective:
        eff = self._effective.get(model)
        if eff is None:
            eff = self._effective[model] = _resolve(self.scenario, model)
        return eff

    def rng_for(self, model: str, messages: Any) -> random.Random:
        """RNG seeded by (seed, model, messages, how often this pair was seen before)."""
        digest = hashlib.blake2b(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).digest()
        key = (model, digest)
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        material = f"{self.seed}|{model}|{n}|".encode() + digest
        return random.Random(int.from_bytes(hashlib.blake2b(material, digest_size=16).digest()))

    def next_script_step(self, model: str) -> ScriptStep | None:
        """Consume the next scripted step for `model` (or for "*"), if any is left."""
        script = self.scenario.script
        name = model if model in script else "*"
        steps = script.get(name)
        if not steps:
            return None
        i = self._cursor.get(name, 0)
        if i >= len(steps):
            return None
        self._cursor[name] = i + 1
        return steps[i]

    def outage_status(self, model: str) -> int | None:
        """502/503 if `model` is inside a configured outage window right now."""
        t = self.clock() - self.started
        for o in self.scenario.outages:
            if o.model == model and o.start_s <= t < o.end_s:
                return o.status
        return None

    def admit_rpm(self, key: str) -> float | None:
        """None if the key may make a request now, else seconds until it may (sliding window)."""
        rpm = self.scenario.key_rpm
        if rpm is None:
            return None
        now = self.clock()
        window = self._rpm.setdefault(key, deque())
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= rpm:
            return 60.0 - (now - window[0])
        window.append(now)
        return None

    def search_price(self, model: str) -> Decimal:
        """USD of one web search on catalogue model `model` (a `ModelInfo.id`).

        The scenario's `web_search_usd`, else the model's positive `pricing.web_search`, else
        the web plugin's default (5 results x $0.004).
        """
        override = self.scenario.web_search_usd
        if override is not None:
            return Decimal(str(override))
        if self._search_prices is None:
            self._search_prices = _search_prices(self.catalog.raw)
        return self._search_prices.get(model, R.WEB_SEARCH_DEFAULT_USD)

    def bill(self, upstream: R.Priced, *, model: str, searched: bool) -> R.Bill:
        """Bill an answer under the scenario in force (BYOK fee, web search price)."""
        sc = self.scenario
        return R.bill(
            upstream,
            search_usd=self.search_price(model) if searched else None,
            byok_fee_rate=Decimal(str(sc.byok_fee_rate)) if sc.byok else None,
        )

    def record(self, gen: Generation, *, billed: bool) -> None:
        """Remember a generation (for /generation) and bill it (for /key and the ledger)."""
        self.generations[gen.id] = gen
        if billed:
            self.billed.append(gen)
            self.billed_total += gen.bill.total
            self.balance_total += gen.bill.cost
            self.byok_total += gen.bill.byok_upstream

    def settle_batches(self) -> None:
        """Bill the batch items that finished by now (at the batch price, when their result
        exists), so every total below includes them."""
        for item in self.batches.settle(self.clock()):
            if item.bill is not None:
                self.billed_total += item.bill.total
                self.balance_total += item.bill.cost
                self.byok_total += item.bill.byok_upstream

    def remaining_credit(self) -> Decimal | None:
        """What is left of `key_limit_usd` (BYOK upstream costs do not count against it)."""
        self.settle_batches()
        limit = self.scenario.key_limit_usd
        return None if limit is None else Decimal(str(limit)) - self.balance_total

    def ledger(self) -> dict[str, Any]:
        """Every billed call and exactly what the user pays for it (see docs/simulator.md).

        `cost_usd` = `fee_usd` (charged to the OpenRouter balance, = usage.cost) +
        `upstream_usd` (billed by the provider to the user's own key: BYOK only, else "0").
        """
        self.settle_batches()
        batch_items = self.batches.ledger()
        return {
            "calls": len(self.billed),
            "batches": self.batches_submitted,
            "batch_items": len(batch_items),
            "batch_cost_usd": format(
                sum((Decimal(b["cost_usd"]) for b in batch_items), Decimal(0)), "f"
            ),
            "in_flight": self.in_flight,
            "total_cost_usd": format(self.billed_total, "f"),
            "fee_usd": format(self.balance_total, "f"),
            "upstream_usd": format(self.byok_total, "f"),
            "generations": [
                {
                    "id": g.id,
                    "model": g.model,
                    "cost_usd": format(g.bill.total, "f"),
                    "fee_usd": format(g.bill.cost, "f"),
                    "upstream_usd": format(g.bill.byok_upstream, "f"),
                    "web_search_usd": format(g.bill.search, "f"),
                    "web_searches": g.bill.searches,
                    "byok": g.bill.byok,
                    "prompt_tokens": g.prompt_tokens,
                    "completion_tokens": g.completion_tokens,
                    "finish_reason": g.finish_reason,
                    "delivered": g.delivered,
                    "usage_reported": g.usage_reported,
                }
                for g in self.billed
            ],
            "batch_generations": batch_items,
        }


def _search_prices(raw: bytes) -> dict[str, Decimal]:
    """Model id → positive `pricing.web_search` of a `/models` document."""
    prices = {}
    for m in orjson.loads(raw)["data"]:
        value = (m.get("pricing") or {}).get("web_search")
        if value is not None and Decimal(str(value)) > 0:
            prices[m["id"]] = Decimal(str(value))
    return prices


SIM_STATE = web.AppKey("batchroute_sim_state", SimState)
"""`app[SIM_STATE]` is the live `SimState` (use `set_scenario(app, s)` to change the scenario)."""
