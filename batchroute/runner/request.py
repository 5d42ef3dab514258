"""The request of one call, assembled in one place: the body sent to /chat/completions, the
models that may serve it (native fallback), and whether it streams."""

from __future__ import annotations

from typing import Any

from batchroute.plan import RunPlan, WorkItem
from batchroute.router import TierPlan


class Requests:
    """Builds each call's body from the run's plan; per (tier, model) constants once."""

    def __init__(self, plan: RunPlan) -> None:
        self._plan = plan
        self._params = dict(plan.params)  # generation parameters sent with every call
        self._stream = plan.spec.limits.stream
        self._routing: dict[tuple[str, str], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self._stream_of: dict[tuple[str, str], bool] = {}

    def served_by(self, plan: TierPlan, model: str) -> tuple[str, ...]:
        """The models that may serve a call to `model` (itself, and its native fallbacks)."""
        return self._route(plan, model)[1]

    def body(self, item: WorkItem, plan: TierPlan, model: str) -> dict[str, Any]:
        """The JSON body: model, messages, the job's parameters, usage accounting, routing."""
        return {
            "model": model,
            "messages": item.messages,
            **self._params,
            "usage": {"include": True},
            **self._route(plan, model)[0],
        }

    def streams(self, plan: TierPlan, model: str) -> bool:
        """Stream this call? The tier says, else `limits.stream` ("auto": reasoning models)."""
        key = (plan.name, model)
        found = self._stream_of.get(key)
        if found is None:
            if plan.stream is not None:
                found = plan.stream
            elif self._stream == "auto":
                info = self._plan.catalog.get(model)
                found = info is not None and "reasoning" in info.supported_parameters
            else:
                found = self._stream == "always"
            self._stream_of[key] = found
        return found

    def _route(self, plan: TierPlan, model: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        key = (plan.name, model)
        found = self._routing.get(key)
        if found is None:
            found = self._routing[key] = self._plan.served_by(plan.name, model)
        return found
