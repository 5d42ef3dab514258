"""One chat request as the simulator parsed it (`SimCall`) and what it answers (`Answer`).

The shared vocabulary of `app.py` (routing, plain answers) and `streaming.py` (SSE answers), so
neither imports the other. (`SimCall`, not `Call`: `batchroute.runner.work.Call` is the client's.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from batchroute.catalog import ModelInfo
from batchroute.simulator import responses as R
from batchroute.simulator.state import Generation, SimState


@dataclass(slots=True)
class SimCall:
    """One parsed chat request, with its per-request RNG."""

    model: str
    candidates: list[str]
    messages: list[Any]
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    json_mode: bool
    max_price: dict[str, Any] | None
    web: bool  # `plugins` asks for web search ({"id": "web"})
    rng: random.Random
    gid: str
    created: int

    def searches(self, model: str) -> bool:
        """Whether serving `model` runs a web search (the web plugin, or an `:online` id)."""
        return self.web or model.endswith(":online")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the model 'generated' for one call."""

    model: str
    info: ModelInfo
    content: str
    finish: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    generation_s: float
    searched: bool = False  # one web search ran (billed even when the tokens are not)

    def bill(self, st: SimState, *, insured: bool = False) -> R.Bill:
        """What this answer is billed; `insured`: zero-completion insurance waives the tokens."""
        upstream = (
            R.ZERO_PRICE
            if insured
            else R.price(self.info, self.model, self.prompt_tokens, self.completion_tokens)
        )
        return st.bill(upstream, model=self.info.id, searched=self.searched)

    def record_failed(self, st: SimState, call: SimCall, *, streamed: bool) -> None:
        """A generation that failed inside a 200 (zero-completion insurance: the tokens are
        not billed, a web search is): GET /generation knows it, so a client can learn its
        cost, usually $0."""
        bill = self.bill(st, insured=True)
        gen = self.generation(call, bill=bill, streamed=streamed, delivered=False, finish="error")
        gen.completion_tokens = 0
        st.record(gen, billed=bill.total > 0)

    def generation(
        self,
        call: SimCall,
        *,
        bill: R.Bill,
        streamed: bool,
        delivered: bool,
        finish: str | None = None,
        usage_reported: bool = True,
    ) -> Generation:
        return Generation(
            id=call.gid,
            model=self.model,
            provider=R.provider_for(self.model),
            bill=bill,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason=finish or self.finish,
            streamed=streamed,
            created=float(call.created),
            latency_ms=round(self.latency_ms + self.generation_s * 1000),
            generation_time_ms=round(self.generation_s * 1000),
            delivered=delivered,
            usage_reported=usage_reported,
        )
