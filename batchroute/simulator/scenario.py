"""Simulator scenarios: latency, output length, fault rates, outages and per-test scripts.

Config only (validated once, extra keys forbidden); the web app in `app.py` interprets it.
Every field and its default is listed in `Scenario`'s docstring and in docs/simulator.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

FAULTS: tuple[str, ...] = (
    "ok",
    "429",
    "429_daily",
    "408",
    "500",
    "502",
    "503",
    "200_error",
    "choice_error",
    "empty",
    "leading_ws",
    "malformed",
    "reset",
    "hang",
    "no_usage",
    "401",
    "402",
    "400_context",
    "403",
    "404",
)
"""Every fault name a `script` entry may use ("ok" = a normal answer)."""

RANDOM_FAULTS: tuple[str, ...] = FAULTS[1:15]
"""Faults that can also be drawn at random, each from its `rate_<name>` field.

New faults go at the end: the cumulative draw follows this order, so appending one leaves every
existing scenario's outcomes unchanged."""

FALLBACK_FAULTS: frozenset[str] = frozenset(
    {"429", "408", "500", "502", "503", "400_context", "403", "404"}
)
"""Faults raised before any token is produced: OpenRouter moves on to the next `models` entry."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lognormal(_Strict):
    """A lognormal distribution given by its median and sigma (of the underlying normal)."""

    dist: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(default=0.5, ge=0)


class Normal(_Strict):
    """A normal distribution (values are clipped by the consumer)."""

    dist: Literal["normal"] = "normal"
    mean: float = Field(gt=0)
    sd: float = Field(default=0, ge=0)


Distribution = Normal | Lognormal


class _Rates(_Strict):
    """Per-call fault probabilities; together they must not exceed 1."""

    rate_429: float = Field(default=0, ge=0, le=1)
    rate_429_daily: float = Field(default=0, ge=0, le=1)
    rate_408: float = Field(default=0, ge=0, le=1)
    rate_500: float = Field(default=0, ge=0, le=1)
    rate_502: float = Field(default=0, ge=0, le=1)
    rate_503: float = Field(default=0, ge=0, le=1)
    rate_200_error: float = Field(default=0, ge=0, le=1)
    rate_choice_error: float = Field(default=0, ge=0, le=1)
    rate_empty: float = Field(default=0, ge=0, le=1)
    rate_leading_ws: float = Field(default=0, ge=0, le=1)
    rate_malformed: float = Field(default=0, ge=0, le=1)
    rate_reset: float = Field(default=0, ge=0, le=1)
    rate_hang: float = Field(default=0, ge=0, le=1)
    rate_no_usage: float = Field(default=0, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_at_most_one(self) -> _Rates:
        total = sum(getattr(self, f"rate_{f}") for f in RANDOM_FAULTS)
        if total > 1:
            raise ValueError(f"fault rates add up to {total:g} > 1")
        return self


class ModelOverride(_Rates):
    """Per-model settings; only the keys actually given override the scenario's."""

    latency_ms: float | Lognormal = Field(default=0, union_mode="left_to_right")
    tokens_per_s: float = Field(default=0, ge=0)
    completion_tokens: Distribution = Field(default_factory=lambda: Normal(mean=120, sd=60))


class Outage(_Strict):
    """`model` fails with `status` while start_s <= (clock - app start) < end_s."""

    model: str
    start_s: float = Field(ge=0)
    end_s: float
    status: Literal[502, 503] = 503


class ScriptStep(_Strict):
    """One scripted call: a fault name plus optional parameters."""

    fault: str
    retry_after_s: float | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    latency_ms: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _known_fault(self) -> ScriptStep:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {', '.join(FAULTS)}")
        return self


class BatchSettings(_Strict):
    """How the simulated Batch API behaves (docs/simulator.md "Batch API"); all times are
    seconds on the simulator's clock, counted from the submission."""

    batch_not_found_s: float = Field(default=2.0, ge=0)
    batch_validating_s: float = Field(default=1.0, ge=0)
    batch_in_progress_s: float = Field(default=2.0, ge=0)
    batch_finalizing_s: float = Field(default=0.5, ge=0)
    batch_window_s: float = Field(default=86400.0, gt=0)
    rate_batch_item_error: float = Field(default=0, ge=0, le=1)
    rate_batch_invalid: float = Field(default=0, ge=0, le=1)
    rate_batch_expire: float = Field(default=0, ge=0, le=1)
    batch_unsupported_models: list[str] = Field(default_factory=list)
    batch_requires_variant: bool = False
    batch_enabled: bool = True
    batch_item_usage: Literal["tokens", "cost", "none"] = "tokens"
    batch_price_ratio: float = Field(default=0.5, gt=0, le=1)
    batch_max_requests: int = Field(default=5000, ge=1)
    batch_max_bytes: int = Field(default=200_000_000, ge=1)


def _steps(raw: list[Any]) -> list[ScriptStep]:
    return [
        ScriptStep(fault=s) if isinstance(s, str) else ScriptStep.model_validate(s) for s in raw
    ]


class Scenario(ModelOverride, BatchSettings):
    """How the fake OpenRouter behaves. All randomness is seeded (see `create_app`).

    Fields [defaults]:
        latency_ms [0]: fixed ms before the answer, or {"dist": "lognormal", "median", "sigma"}.
        tokens_per_s [0 = instant]: output speed, added to latency (and paces SSE chunks).
        completion_tokens [{mean: 120, sd: 60}]: normal {mean, sd} or lognormal {dist, median,
            sigma}; clipped to [1, max_tokens].
        rate_429, rate_429_daily, rate_408, rate_500, rate_502, rate_503, rate_200_error,
            rate_choice_error, rate_empty, rate_leading_ws, rate_malformed, rate_reset,
            rate_hang, rate_no_usage [0]: per-call fault probabilities (sum <= 1).
        models [{}]: {model id: {any of the fields above}} per-model overrides.
        outages [[]]: [{model, start_s, end_s, status: 502|503}], seconds since app start.
        script [{}]: {model id or "*": [fault name | {fault, retry_after_s, completion_tokens,
            latency_ms}]}; each call consumes the next entry before random faults apply.
        key_rpm [None]: requests per minute per API key (sliding window) → 429.
        key_limit_usd [None]: key credit limit → 402 once billed usage would exceed it.
        generation_delay_s [0.5]: /generation answers 404 for this long after the call.
        retry_after_s [1]: Retry-After (s) of 429 and 503 answers.
        hang_s [3600]: how long a `hang` sleeps (through the injected sleep).
        bill_undelivered [True]: `malformed`/`reset` answers were generated, so they are billed
            (and visible in /generation and the ledger with delivered=false).
        byok [False]: bring-your-own-key account. Every billed answer's `usage.cost` is only
            OpenRouter's fee (upstream x byok_fee_rate, plus any web search), `is_byok` is true
            and `cost_details.upstream_inference_cost` is the provider's list price, which the
            user pays on their own key. The ledger bills fee + upstream; /key counts the fee in
            `usage*` and the upstream in `byok_usage*`.
        byok_fee_rate [0.05]: OpenRouter's BYOK fee as a fraction of the upstream cost (0..1).
        web_search_usd [None]: price of one web search (`:online` model ids, or a `plugins`
            entry {"id": "web"}); None = the model's catalogue `web_search` price, else $0.02
            (5 results x $0.004). One search per call, in `usage.cost` but not in the upstream
            cost, and billed even when zero-completion insurance waives the tokens.
        batch_* and rate_batch_* (see `BatchSettings` and docs/simulator.md): the Batch API's
            timings, failure rates, which models have no batch endpoint, and its price.
    """

    models: dict[str, ModelOverride] = Field(default_factory=dict)
    outages: list[Outage] = Field(default_factory=list)
    script: dict[str, list[ScriptStep]] = Field(default_factory=dict)
    key_rpm: int | None = Field(default=None, ge=1)
    key_limit_usd: float | None = Field(default=None, ge=0)
    generation_delay_s: float = Field(default=0.5, ge=0)
    retry_after_s: float = Field(default=1.0, ge=0)
    hang_s: float = Field(default=3600.0, ge=0)
    bill_undelivered: bool = True
    byok: bool = False
    byok_fee_rate: float = Field(default=0.05, ge=0, le=1)
    web_search_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _parse_script(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("script"), dict):
            script = {k: _steps(v) if isinstance(v, list) else v for k, v in data["script"].items()}
            data = {**data, "script": script}
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        """Validate a plain dict (as read from YAML/JSON); raises ValueError on bad input."""
        return cls.model_validate(d)

    def to_dict(self) -> dict[str, Any]:
        """The scenario as plain JSON-able data (round-trips through `from_dict`)."""
        return self.model_dump(mode="json")

    def with_latency(self, ms: float) -> Scenario:
        """A copy with a fixed latency of `ms` ms (for `batchroute simulate --latency-ms`)."""
        return self.model_copy(update={"latency_ms": float(ms)})

    def with_script(self, script: dict[str, list[str | dict[str, Any]]]) -> Scenario:
        """A copy with `script` replaced, e.g. {"openai/gpt-4o-mini": ["429", "ok"]}."""
        return self.model_copy(update={"script": {k: _steps(v) for k, v in script.items()}})


_FEW = 0.02
PRESETS: dict[str, dict[str, Any]] = {
    "clean": {},
    "flaky": {"rate_429": 0.03, "rate_502": 0.02, "rate_503": 0.02, "rate_200_error": 0.01},
    "chaos": {
        # no_usage is left out: a rate for it would turn 2 % of chaos's "ok" answers into
        # answers without usage, changing every existing chaos run
        **{f"rate_{f}": _FEW for f in RANDOM_FAULTS if f not in {"hang", "429_daily", "no_usage"}},
        "rate_429_daily": 0.005,
        "rate_hang": 0.002,
        "outages": [{"model": "openai/gpt-4o-mini", "start_s": 5, "end_s": 15, "status": 503}],
    },
    "slow": {
        "latency_ms": {"dist": "lognormal", "median": 800, "sigma": 0.5},
        "tokens_per_s": 50,
    },
}
"""Named scenarios for `load_scenario` / `batchroute simulate --scenario`."""


def load_scenario(name_or_path: str) -> Scenario:
    """A preset ("clean", "flaky", "chaos", "slow") or a .yaml/.yml/.json scenario file."""
    if name_or_path in PRESETS:
        return Scenario.from_dict(PRESETS[name_or_path])
    path = Path(name_or_path)
    if path.suffix.lower() not in {".yaml", ".yml", ".json"} or not path.is_file():
        raise ValueError(
            f"unknown scenario {name_or_path!r}: not a preset ({', '.join(PRESETS)}) "
            "nor an existing .yaml/.yml/.json file"
        )
    text = path.read_bytes()
    data = orjson.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"scenario file {name_or_path!r} must hold a mapping")
    return Scenario.from_dict(data)
