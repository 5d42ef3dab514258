"""The request of one call, assembled in one place: the body sent to /chat/completions, the
models that may serve it (native fallback), and whether it streams."""

from __future__ import annotations

from typing import Any

from batchroute.plan import RunPlan, WorkItem
from batchroute.router import TierPlan


class Route:
    """What a call to one model of one tier sends besides the record, built once per (tier,
    model): the body's constant part (the job's parameters, usage accounting, routing), the
    models that may serve it (itself, and its native fallbacks), and whether it streams."""

    __slots__ = ("base", "models", "stream")

    def __init__(self, base: dict[str, Any], models: tuple[str, ...], stream: bool) -> None:
        self.base, self.models, self.stream = base, models, stream


class Requests:
    """Builds each call's body from the run's plan; per (tier, model) constants once."""

    def __init__(self, plan: RunPlan) -> None:
        self._plan = plan
        self._params = dict(plan.params)  # generation parameters sent with every call
        self._stream = plan.spec.limits.stream
        self._routes: dict[tuple[str, str], Route] = {}

    def route(self, plan: TierPlan, model: str) -> Route:
        """The call's constant parts (one dict lookup a call: issue 11)."""
        found = self._routes.get((plan.name, model))
        if found is None:
            extra, models = self._plan.served_by(plan.name, model)
            base = {**self._params, "usage": {"include": True}, **extra}
            found = self._routes[plan.name, model] = Route(base, models, self._streams(plan, model))
        return found

    def served_by(self, plan: TierPlan, model: str) -> tuple[str, ...]:
        """The models that may serve a call to `model` (itself, and its native fallbacks)."""
        return self.route(plan, model).models

    @staticmethod
    def body(item: WorkItem, model: str, route: Route) -> dict[str, Any]:
        """The JSON body: model, messages, the job's parameters, usage accounting, routing
        (the same keys in the same order as ever: one dict of the record's, one merge)."""
        return {"model": model, "messages": item.messages, **route.base}

    def streams(self, plan: TierPlan, model: str) -> bool:
        """Stream this call? The tier says, else `limits.stream` ("auto": reasoning models)."""
        return self.route(plan, model).stream

    def _streams(self, plan: TierPlan, model: str) -> bool:
        if plan.stream is not None:
            return plan.stream
        if self._stream == "auto":
            info = self._plan.catalog.get(model)
            return info is not None and "reasoning" in info.supported_parameters
        return self._stream == "always"
