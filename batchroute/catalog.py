"""The price catalogue: OpenRouter `/models` data parsed into exact Decimal prices.

Pure and synchronous: it parses bytes it is given (or the copy shipped in the package) and does
no network or database I/O. The shipped copy, `batchroute/data/catalog.json`, is derived by
`tools/make_catalog.py` from a real `/models` response of May 2026 (see that script).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

import orjson

SHIPPED_CATALOG_DATE = "2026-05-20"


WEB_SEARCH_DEFAULT_USD = Decimal("0.02")
"""A web search on a model whose catalogue entry has no `web_search` price: OpenRouter's web
plugin fetches 5 results by default at $0.004 each (openrouter-api.md §5, `:online`)."""

CACHE_WRITE_1H_FACTOR = 2
"""A prompt token written to Anthropic's cache for an hour costs twice the prompt price (its
5-minute write, 1.25x, is /models' `input_cache_write`); the snapshot lists no
`input_cache_write_1h` for any model."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Price (USD per token / per request / per search) and limits of one model.

    `prompt` and `completion` are the list prices; `worst_prompt` and `worst_completion` are the
    highest per-token prices any part of the pricing can charge (long-context `overrides`,
    `internal_reasoning` for reasoning tokens): what a worst case must be priced at.
    """

    id: str
    prompt: Decimal
    completion: Decimal
    request: Decimal
    context_length: int
    max_completion_tokens: int | None
    supported_parameters: frozenset[str]
    web_search: Decimal | None = None  # per search; None: the catalogue gives no price
    internal_reasoning: Decimal = Decimal(0)
    worst_prompt: Decimal | None = None  # None: the same as `prompt`
    worst_completion: Decimal | None = None
    cache_write: Decimal | None = None  # per prompt token written to the cache; None: unbilled
    cache_write_1h: Decimal | None = None  # the same with a 1-hour TTL; None: not listed

    @property
    def variable_price(self) -> bool:
        """True for router models priced "-1" (e.g. openrouter/auto): cannot be budgeted."""
        return self.prompt < 0 or self.completion < 0

    @property
    def is_free(self) -> bool:
        return self.prompt == 0 and self.completion == 0 and self.request == 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """Exact list price of a call with these token counts."""
        return prompt_tokens * self.prompt + completion_tokens * self.completion + self.request

    def cache_write_price(self, ttl: str) -> Decimal | None:
        """What a prompt token written to the cache with `ttl` ("5m" or "1h") may be billed;
        None for a model that lists no cache-write price (it bills no writes). A 1-hour write
        not listed apart is twice the prompt price: Anthropic's, whose 5-minute write is the
        1.25x that /models lists as `input_cache_write`."""
        if self.cache_write is None and self.cache_write_1h is None:
            return None
        prompt = self.prompt if self.worst_prompt is None else self.worst_prompt
        write = max(self.cache_write or prompt, prompt)
        if ttl == "5m":
            return write
        listed = self.cache_write_1h
        return max(write, CACHE_WRITE_1H_FACTOR * prompt if listed is None else listed)

    def worst_cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        searches: int = 0,
        cache_ttl: str | None = None,
    ) -> Decimal:
        """The most a call with at most these token counts can be billed, every charge counted:
        the request fee, the dearest prompt and completion prices the pricing has (overrides,
        reasoning; with `cache_ttl`, a cache write of every prompt token), and `searches` web
        searches."""
        prompt = self.prompt if self.worst_prompt is None else self.worst_prompt
        if cache_ttl is not None:
            prompt = max(prompt, self.cache_write_price(cache_ttl) or prompt)
        completion = self.completion if self.worst_completion is None else self.worst_completion
        total = prompt_tokens * prompt + completion_tokens * completion + self.request
        if searches:
            per = WEB_SEARCH_DEFAULT_USD if self.web_search is None else self.web_search
            total += searches * per
        return total


def _price(pricing: dict[str, Any], key: str) -> Decimal:
    raw = pricing.get(key, "0")
    try:
        return Decimal(str(raw))
    except InvalidOperation as exc:
        raise ValueError(f"pricing.{key} is not a number: {raw!r}") from exc


def _override_prices(pricing: dict[str, Any], key: str) -> list[Decimal]:
    """Every price for `key` in `pricing.overrides` (long-context or time-of-day pricing).

    The shape of an override is not pinned down in the docs, so any entry, or any mapping
    nested in it (e.g. a `pricing` object), that names `key` counts: the worst case takes the
    highest, whatever condition makes it apply.
    """
    found: list[Decimal] = []
    todo: list[Any] = list(pricing.get("overrides") or [])
    while todo:
        entry = todo.pop()
        if not isinstance(entry, dict):
            continue
        if key in entry:
            found.append(_price(entry, key))
        todo.extend(v for v in entry.values() if isinstance(v, dict | list))
        for v in entry.values():
            if isinstance(v, list):
                todo.extend(v)
    return found


def _model(m: dict[str, Any]) -> ModelInfo:
    pricing = m.get("pricing") or {}
    top = m.get("top_provider") or {}
    prompt, completion = _price(pricing, "prompt"), _price(pricing, "completion")
    reasoning = _price(pricing, "internal_reasoning")
    worst_prompt = max([prompt, *_override_prices(pricing, "prompt")])
    # Reasoning tokens count against max_tokens and may be priced apart from the answer.
    worst_completion = max([completion, reasoning, *_override_prices(pricing, "completion")])
    writes = {k: _listed(pricing, k) for k in ("input_cache_write", "input_cache_write_1h")}
    return ModelInfo(
        id=m["id"],
        prompt=prompt,
        completion=completion,
        request=max([_price(pricing, "request"), *_override_prices(pricing, "request")]),
        context_length=int(m.get("context_length") or top.get("context_length") or 0),
        max_completion_tokens=top.get("max_completion_tokens"),
        supported_parameters=frozenset(m.get("supported_parameters") or ()),
        web_search=_price(pricing, "web_search") if "web_search" in pricing else None,
        internal_reasoning=reasoning,
        worst_prompt=None if worst_prompt == prompt else worst_prompt,
        worst_completion=None if worst_completion == completion else worst_completion,
        cache_write=writes["input_cache_write"],
        cache_write_1h=writes["input_cache_write_1h"],
    )


def _listed(pricing: dict[str, Any], key: str) -> Decimal | None:
    """The highest price `key` has (its own and in `overrides`); None when it has none."""
    prices = _override_prices(pricing, key)
    if key in pricing:
        prices.append(_price(pricing, key))
    return max(prices, default=None)


class Catalog:
    """Model id → ModelInfo, with the raw `/models` JSON kept for serving and caching."""

    def __init__(self, raw: bytes, *, source: str, fetched_at: str) -> None:
        doc = orjson.loads(raw)
        self.raw = raw
        self.source = source
        self.fetched_at = fetched_at
        self.models: dict[str, ModelInfo] = {m["id"]: _model(m) for m in doc["data"]}
        self._dearest: ModelInfo | None = None

    def __contains__(self, model_id: object) -> bool:
        return self.get(str(model_id)) is not None

    def __len__(self) -> int:
        return len(self.models)

    def get(self, model_id: str) -> ModelInfo | None:
        """Look a model up; variants other than `:free` (e.g. `:floor`) share the base price."""
        info = self.models.get(model_id)
        if info is None and ":" in model_id:
            base, _, variant = model_id.partition(":")
            if variant != "free":
                info = self.models.get(base)
        return info

    def dearest(self) -> ModelInfo:
        """A model priced at the highest price of every kind in the catalogue: what a model
        missing from it is budgeted at, so that the cap holds whatever it turns out to cost."""
        if self._dearest is None:
            priced = [m for m in self.models.values() if not m.variable_price]
            top = max(priced, key=lambda m: (m.prompt + m.completion, m.id))
            searches = [m.web_search for m in priced if m.web_search is not None]
            self._dearest = ModelInfo(
                id=top.id,
                prompt=max(m.worst_prompt or m.prompt for m in priced),
                completion=max(m.worst_completion or m.completion for m in priced),
                request=max(m.request for m in priced),
                context_length=max(m.context_length for m in priced),
                max_completion_tokens=None,
                supported_parameters=top.supported_parameters,
                web_search=max(searches, default=None),
                cache_write=max((m.cache_write for m in priced if m.cache_write), default=None),
                cache_write_1h=max(
                    (m.cache_write_1h for m in priced if m.cache_write_1h), default=None
                ),
            )
        return self._dearest

    @classmethod
    def shipped(cls) -> Catalog:
        """The catalogue shipped inside the package (May 2026 snapshot)."""
        raw = resources.files("batchroute").joinpath("data/catalog.json").read_bytes()
        return cls(raw, source="shipped", fetched_at=SHIPPED_CATALOG_DATE)
