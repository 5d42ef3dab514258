"""The request of one call, assembled in one place: the body sent to /chat/completions, the
models that may serve it (native fallback), and whether it streams."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from batchroute.catalog import Catalog
from batchroute.plan import WorkItem
from batchroute.router import TierPlan


class Requests:
    """Builds each call's body; per (tier, model) constants are computed once."""

    def __init__(
        self,
        params: Mapping[str, Any],
        catalog: Catalog,
        stream: Literal["auto", "always", "never"],
    ) -> None:
        self._params = dict(params)  # generation parameters sent with every call
        self._catalog = catalog
        self._stream = stream
        self._extra: dict[tuple[str, str], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self._stream_of: dict[tuple[str, str], bool] = {}

    def served_by(self, plan: TierPlan, model: str) -> tuple[str, ...]:
        """The models that may serve a call to `model` (itself, and its native fallbacks)."""
        return self._routing(plan, model)[1]

    def body(self, item: WorkItem, plan: TierPlan, model: str) -> dict[str, Any]:
        """The JSON body: model, messages, the job's parameters, usage accounting, routing."""
        return {
            "model": model,
            "messages": item.messages,
            **self._params,
            "usage": {"include": True},
            **self._routing(plan, model)[0],
        }

    def streams(self, plan: TierPlan, model: str) -> bool:
        """Stream this call? The tier says, else `limits.stream` ("auto": reasoning models)."""
        key = (plan.name, model)
        found = self._stream_of.get(key)
        if found is None:
            if plan.stream is not None:
                found = plan.stream
            elif self._stream == "auto":
                info = self._catalog.get(model)
                found = info is not None and "reasoning" in info.supported_parameters
            else:
                found = self._stream == "always"
            self._stream_of[key] = found
        return found

    def _routing(self, plan: TierPlan, model: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        key = (plan.name, model)
        found = self._extra.get(key)
        if found is None:
            extra = plan.extra_body(model)
            found = self._extra[key] = (extra, tuple(extra.get("models") or (model,)))
        return found
