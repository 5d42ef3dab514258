"""Budget stage: the daily cap as clock-free Decimal arithmetic. Pure and synchronous.

A call may go out only if settled spend + outstanding reservations + its own worst case fit
under the cap; afterwards its reservation is replaced by what it actually cost. The runner owns
the waiting (an asyncio.Condition); this module only answers "does it fit" and keeps the books.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import orjson

from batchroute.catalog import ModelInfo
from batchroute.usd import USD_PLACES as USD_PLACES  # the books keep the store's places
from batchroute.usd import ceil_usd as ceil_usd


def quantize_usd(x: Decimal) -> Decimal:
    """An actual cost at the store's 12 places, rounded up (a cost reported with more
    decimals is booked at most 1e-12 over the bill, never under it)."""
    return ceil_usd(x)


MESSAGE_OVERHEAD_TOKENS = 8
"""Per-message allowance for role and formatting tokens in the prompt-token bound."""

REQUEST_OVERHEAD_TOKENS = 16
"""Per-request allowance (reply priming, BOS/EOS) in the prompt-token bound."""


def typical_prompt_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """A typical prompt's tokens (for expected, not worst-case, costs): about 4 bytes a token,
    plus each message's overhead."""
    return sum(len(m["content"].encode()) // 4 + 4 for m in messages)


def prompt_token_bound(contents: Iterable[str]) -> int:
    """A true upper bound on prompt tokens: every token is at least one UTF-8 byte."""
    total = REQUEST_OVERHEAD_TOKENS
    for c in contents:  # ASCII text (the usual case) has as many bytes as characters
        total += (len(c) if c.isascii() else len(c.encode("utf-8"))) + MESSAGE_OVERHEAD_TOKENS
    return total


PROMPT_PARAMS = ("response_format", "tools", "functions", "tool_choice")
"""Request fields a provider renders into the prompt and bills as input tokens."""

TOOL_PROMPT_TOKENS = 1_024
"""A provider's own prompt for tools or an enforced format (Anthropic's tool-use system prompt
is up to 530 tokens), with room to spare: it is in no byte the request carries."""


def params_token_bound(params: Mapping[str, Any]) -> int:
    """A true upper bound on the prompt tokens a request's parameters add to its messages'.

    A `response_format` schema and `tools` definitions are billed as input tokens (every token
    at least one byte of their JSON), and the provider adds its own tool-use prompt: counted
    once per job, on top of `prompt_token_bound`."""
    sent = [params[k] for k in PROMPT_PARAMS if params.get(k) is not None]
    if not sent:
        return 0
    return sum(len(orjson.dumps(v)) for v in sent) + TOOL_PROMPT_TOKENS


BYOK_FEE = Decimal("0.05")
"""With BYOK the provider bills the user's key the list price and OpenRouter adds a fee of 5 %
of it. Whether a call goes through the user's own key is an account setting nobody can see
before the answer, so every worst case includes it."""


def worst_case_cost(
    model: ModelInfo,
    prompt_tokens_max: int,
    max_tokens: int,
    *,
    searches: int = 0,
    cache_ttl: str | None = None,
) -> Decimal:
    """Most a call can cost: every prompt token bound billed at the dearest prompt price (a
    cache write's, with `cache_ttl`), `max_tokens` generated at the dearest completion price,
    the request fee, `searches` web searches (`:online`), and the BYOK fee on top."""
    worst = model.worst_cost(prompt_tokens_max, max_tokens, searches=searches, cache_ttl=cache_ttl)
    return worst * (1 + BYOK_FEE)


FLAG_ABOVE_RESERVATION = 2
"""A reported cost above its reservation × this is flagged (`cost_above_reservation`): a price,
a multiplier or a search the reservation did not know. It is booked all the same (the report is
the bill; booking the reservation said less than the bill, for ever when /generation never
answered), and the model's later calls are reserved at the ratio seen (`Pricer`)."""


MAX_BOOKABLE_USD: Final = Decimal(10) ** 15
"""More than any bill, well inside what the store holds (DECIMAL(38,12): 26 integer digits):
a figure above it is garbage, not a cost, and is not booked."""


def plausible_cost(cost: Decimal | None) -> bool:
    """A reported cost that can be booked: finite, not negative, storable. However large it
    is otherwise: a figure above the reservation is the bill (or a bug on their side), and
    either way booking it overcounts rather than undercounts."""
    return cost is not None and cost.is_finite() and 0 <= cost <= MAX_BOOKABLE_USD


def above_reservation(cost: Decimal, reserved: Decimal) -> bool:
    """A booked cost far above what its call reserved (`FLAG_ABOVE_RESERVATION` ×): worth a flag."""
    return cost > reserved * FLAG_ABOVE_RESERVATION


_ZERO = Decimal(0)


# Not frozen (issue 11): one is built per record or call on the hot path, and a frozen
# dataclass's __init__ costs ~5x a plain one's (2.6 vs 0.5 µs for 8 fields). Treat as read-only.
@dataclass(slots=True)
class Reservation:
    id: int
    amount: Decimal


class Budget:
    """Books for one UTC day: `spent` is settled, `reserved` is promised to calls in flight.

    `cap` is the job's daily cap; `ceiling`, when set, is a lower limit learnt from the
    account (the API key's `limit_remaining`, see `lower_ceiling`). `limit` is the smaller.

    Invariant: spent + reserved ≤ limit after every successful `try_reserve`, and `settle` with
    an actual cost ≤ the reservation keeps spent ≤ limit.
    """

    def __init__(self, cap: Decimal, spent: Decimal = Decimal(0)) -> None:
        if not cap.is_finite() or cap <= 0:
            raise ValueError("cap must be a positive, finite amount")
        self.cap = cap
        self.spent = spent
        self.ceiling: Decimal | None = None
        self.out = Decimal(0)  # batches still out, not billed yet (`unbilled`, `landed`)
        self._open: dict[int, Decimal] = {}
        self._reserved = Decimal(0)  # running total of _open (exact: Decimal)
        self._ids = itertools.count(1)
        self.overruns = 0  # settlements above their reservation (a bound was wrong)

    @property
    def limit(self) -> Decimal:
        return self.cap if self.ceiling is None else min(self.cap, self.ceiling)

    @property
    def reserved(self) -> Decimal:
        return self._reserved

    @property
    def in_flight(self) -> int:
        return len(self._open)

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.spent - self.reserved

    def fits(self, amount: Decimal) -> bool:
        return self.spent + self.reserved + amount <= self.limit

    def could_fit(self, amount: Decimal) -> bool:
        """Whether `amount` fits once every call in flight has settled at $0: if not, waiting
        cannot help (settled spend never goes down in a run but by reconciliation)."""
        return self.spent + amount <= self.limit

    def exceeds_cap(self, amount: Decimal) -> bool:
        """`amount` is more than the whole daily cap: such a call can never be made."""
        return amount > self.cap

    def try_reserve(self, amount: Decimal) -> Reservation | None:
        """Reserve `amount` if it fits under the limit, else return None (nothing changes)."""
        if amount < _ZERO:  # Decimal against Decimal: a third of the cost of against 0
            raise ValueError("a reservation cannot be negative")
        # `fits` and `limit` inlined: two calls fewer a call (issue 11)
        limit = self.cap if self.ceiling is None else min(self.cap, self.ceiling)
        if self.spent + self._reserved + amount > limit:
            return None
        r = Reservation(next(self._ids), amount)
        self._open[r.id] = amount
        self._reserved += amount
        return r

    def settle(self, r: Reservation, actual: Decimal) -> None:
        """Replace the reservation with the actual cost of the call."""
        self._reserved -= self._open.pop(r.id)
        if actual > r.amount:
            self.overruns += 1
        self.spent += actual

    def release(self, r: Reservation) -> None:
        """Drop a reservation whose call was never sent."""
        if r.id in self._open:
            self._reserved -= self._open.pop(r.id)

    def correct(self, booked: Decimal, actual: Decimal) -> None:
        """A call booked at `booked` (its reservation: outcome unknown) really cost `actual`.

        The key's ceiling was computed from a `spent` that may have held `booked` while the
        key's own usage held only `actual`: lower it by as much (never raise it).
        """
        self.spent += actual - booked
        if self.ceiling is not None and actual < booked:
            self.ceiling -= booked - actual

    def unbilled(self, amount: Decimal) -> None:
        """Earlier runs' batches, still out, will be billed up to `amount` against the key's
        `limit_remaining` as read (which does not show them yet): the key's ceiling leaves
        room for them (issue 14; a batch cannot be cancelled), at every later read too."""
        self.out += amount
        if self.ceiling is not None:
            self.ceiling -= amount

    def landed(self, amount: Decimal) -> None:
        """A batch counted as still out (`unbilled`) was collected (its bill is in the key's
        usage now) or given up (never submitted): later reads stop leaving room for it, which
        they did twice over, down to a false `budget_exhausted` (the stop-24 review)."""
        self.out = max(self.out - amount, Decimal(0))

    def lower_ceiling(self, key_remaining: Decimal) -> None:
        """The API key can pay `key_remaining` more (its `limit_remaining`, read now).

        What we have settled is in the key's usage (a call booked at its reservation only at
        what it really cost: `correct` lowers the ceiling when that becomes known); what is in
        flight is not, so the key allows spent + key_remaining in total. Only ever lowers the
        limit within a run (a key whose limit resets mid-run does not raise today's cap).
        The batches still out (`unbilled`) are not in that usage yet either: room is left for
        them at every read, not only the first (audit5).
        """
        ceiling = self.spent + max(key_remaining, Decimal(0)) - self.out
        if self.ceiling is None or ceiling < self.ceiling:
            self.ceiling = ceiling


PRIORITY_FACTOR: Final = 2  # OpenAI's priority processing: twice its standard per-token price


def priority_factor(model: str, params: Mapping[str, Any]) -> int:
    """How many times its list price a call may be billed. A `:nitro` model makes priority-tier
    endpoints eligible and `service_tier: priority` asks for one; either is billed at priority
    rates that `/models` does not list (openrouter-api.md §5). OpenAI documents priority at
    twice the standard price and no other multiple is documented, so the reservation assumes
    `PRIORITY_FACTOR` (an overcount when a standard endpoint serves)."""
    if model.endswith(":nitro") or params.get("service_tier") == "priority":
        return PRIORITY_FACTOR
    return 1


def cache_ttl(params: Any) -> str | None:
    """The longest cache a request asks for with a `cache_control` anywhere in its parameters
    (top level: OpenRouter's automatic caching; or in a tool definition): "1h" for any TTL but
    Anthropic's default "5m"; None when it asks for none. A cache write bills every prompt token
    written at `input_cache_write` (1.25x the prompt price), twice it for an hour."""
    found: str | None = None
    todo = [params]
    while todo:
        v = todo.pop()
        if isinstance(v, Mapping):
            c = v.get("cache_control")
            if c is not None:
                ttl = c.get("ttl", "5m") if isinstance(c, Mapping) else "5m"
                if ttl != "5m":
                    return "1h"
                found = "5m"
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return found


MIN_THINKING_TOKENS: Final = 1_024
"""Anthropic's smallest thinking budget (`budget_tokens` ≥ 1024): a smaller one asked for may
be raised to it."""


def reasoning_budget(params: Mapping[str, Any]) -> int:
    """The reasoning tokens a request asks for outright (`reasoning.max_tokens`, at least
    `MIN_THINKING_TOKENS`; 0 without). Reasoning tokens are billed as output; whether they
    count within `max_tokens` when a budget is asked for is documented nowhere, so the worst
    case adds them to it."""
    reasoning = params.get("reasoning")
    if not isinstance(reasoning, Mapping):
        return 0
    budget = reasoning.get("max_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        return 0
    return max(budget, MIN_THINKING_TOKENS)


WEB_RESULTS_TOKENS: Final = 5 * 30_000 * 4
"""The web plugin's results when the model's context is unknown: 5 results (its default
`max_results`), 30,000 characters each (Exa's largest documented per-result size, "high"), 4
UTF-8 bytes a character at most, a token per byte at most."""


def web_prompt_bound(info: ModelInfo, prompt: int) -> int:
    """A true bound on the prompt tokens of a call that runs a web search. The web plugin (and
    a provider's native search) injects its results into the prompt, billed as prompt tokens,
    and no documented figure bounds their size (Exa's is adaptive, "typically" 2,000-4,000
    characters a result; a native engine's is the provider's): only the model's context
    window does, so the whole of it is reserved (`WEB_RESULTS_TOKENS` more without one)."""
    if info.context_length > 0:
        return max(prompt, info.context_length)
    return prompt + WEB_RESULTS_TOKENS


@dataclass(frozen=True, slots=True)
class CallTerms:
    """What a job's request parameters add to each of its calls' worst case, beyond the
    messages' prompt bound and the catalogue's list prices; decided once per plan."""

    params: Mapping[str, Any]
    prompt_tokens: int  # the schema's and tools' tokens (`params_token_bound`)
    completion_tokens: int  # max_tokens, plus a reasoning budget asked for outright
    cache_ttl: str | None  # a cache write of the whole prompt may be billed
    web_search: bool  # `web_search_options`: a search per call

    def searches(self, model: str) -> int:
        """Web searches a call may be billed for: `:online` runs the web plugin once."""
        return 1 if self.web_search or model.endswith(":online") else 0

    def worst(self, info: ModelInfo, model: str, prompt_bound: int) -> Decimal:
        """The reservation of one call to `model` (priced by `info`) with this prompt bound:
        the schema's and tools' tokens billed as prompt, though not in the messages; with a
        web search, the results it injects too (`web_prompt_bound`)."""
        prompt = prompt_bound + self.prompt_tokens
        searches = self.searches(model)
        if searches:
            prompt = web_prompt_bound(info, prompt)
        return self.priced(info, model, prompt, self.completion_tokens, searches)

    def priced(
        self, info: ModelInfo, model: str, prompt: int, completion: int, searches: int
    ) -> Decimal:
        """A call's cost from the token counts its answer reported (no cost with them): at
        the dearest prices its request may be billed at, the BYOK fee included."""
        cost = worst_case_cost(
            info, prompt, completion, searches=searches, cache_ttl=self.cache_ttl
        )
        return ceil_usd(cost * priority_factor(model, self.params))


def call_terms(params: Mapping[str, Any]) -> CallTerms:
    """The `CallTerms` of a job's request parameters (`prompt.request_params`)."""
    return CallTerms(
        params,
        params_token_bound(params),
        int(params["max_tokens"]) + reasoning_budget(params),
        cache_ttl(params),
        "web_search_options" in params,
    )
