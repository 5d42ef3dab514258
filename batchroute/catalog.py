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


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Price (USD per token / per request) and limits of one model."""

    id: str
    prompt: Decimal
    completion: Decimal
    request: Decimal
    context_length: int
    max_completion_tokens: int | None
    supported_parameters: frozenset[str]

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


def _price(pricing: dict[str, Any], key: str) -> Decimal:
    raw = pricing.get(key, "0")
    try:
        return Decimal(str(raw))
    except InvalidOperation as exc:
        raise ValueError(f"pricing.{key} is not a number: {raw!r}") from exc


def _model(m: dict[str, Any]) -> ModelInfo:
    pricing = m.get("pricing") or {}
    top = m.get("top_provider") or {}
    return ModelInfo(
        id=m["id"],
        prompt=_price(pricing, "prompt"),
        completion=_price(pricing, "completion"),
        request=_price(pricing, "request"),
        context_length=int(m.get("context_length") or top.get("context_length") or 0),
        max_completion_tokens=top.get("max_completion_tokens"),
        supported_parameters=frozenset(m.get("supported_parameters") or ()),
    )


class Catalog:
    """Model id → ModelInfo, with the raw `/models` JSON kept for serving and caching."""

    def __init__(self, raw: bytes, *, source: str, fetched_at: str) -> None:
        doc = orjson.loads(raw)
        self.raw = raw
        self.source = source
        self.fetched_at = fetched_at
        self.models: dict[str, ModelInfo] = {m["id"]: _model(m) for m in doc["data"]}

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
        """The most expensive priced model: what a model missing from the catalogue is budgeted
        at, so that the cap holds whatever it turns out to cost."""
        return max(self.models.values(), key=lambda m: (m.prompt + m.completion, m.id))

    @classmethod
    def shipped(cls) -> Catalog:
        """The catalogue shipped inside the package (May 2026 snapshot)."""
        raw = resources.files("batchroute").joinpath("data/catalog.json").read_bytes()
        return cls(raw, source="shipped", fetched_at=SHIPPED_CATALOG_DATE)
