"""The job file's parts: the field types and the sub-models `JobSpec` is made of.

Prompt, tiers, request, limits, budget, output and endpoint, each validated with unknown keys
forbidden. Data and validation only: no file, network, database or environment.
"""

from __future__ import annotations

import string
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

MAX_DAILY_USD = Decimal(1_000_000)
"""The largest daily cap accepted: more is a typo (and `1e400` would be no cap at all)."""


def _no_bool(v: Any) -> Any:
    # YAML's `true`/`false` are Python bools, and a bool is an int: `max_tokens: true` would
    # silently be 1. A number field takes a number.
    if isinstance(v, bool):
        raise ValueError(f"expected a number, not {str(v).lower()}")
    return v


Int = Annotated[int, Strict(), BeforeValidator(_no_bool)]
"""A YAML integer: not a bool, not a float, not a quoted number."""
Float = Annotated[float, Strict(), AllowInfNan(False), BeforeValidator(_no_bool)]
"""A finite YAML number (an integer is fine), not a bool or a quoted number."""
Usd = Annotated[Decimal, AllowInfNan(False), BeforeValidator(_no_bool)]
"""A finite amount in USD: a number, or a string for an exact decimal ("0.05")."""
Bool = Annotated[bool, Strict()]
"""YAML's true or false, not 1 or "yes"."""
Rpm = Annotated[int, Strict(), BeforeValidator(_no_bool), Field(ge=1)]


def _json_values(v: dict[str, Any] | None) -> dict[str, Any] | None:
    """Values sent to OpenRouter as they are must be plain JSON (no YAML dates, sets, binary or
    integers beyond 64 bits), or the first call would fail instead of the job file."""
    if v is not None:
        try:
            orjson.dumps(v)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise ValueError(f"must hold plain JSON values only ({exc})") from None
    return v


QualityCheck = Literal["empty", "length", "json"]
QUALITY_CHECKS: tuple[QualityCheck, ...] = ("empty", "length", "json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptSpec(_Strict):
    system: str | None = None
    user: str

    @field_validator("system", "user")
    @classmethod
    def _plain_fields(cls, v: str | None) -> str | None:
        for _, name, _, _ in string.Formatter().parse(v or ""):
            if name is not None and not name.isidentifier():
                raise ValueError(
                    f"template field {{{name}}} must be a plain record field name "
                    "(write {{ and }} for literal braces)"
                )
        return v

    def fields(self) -> set[str]:
        """Record fields the templates need."""
        out: set[str] = set()
        for tpl in (self.system or "", self.user):
            out.update(n for _, n, _, _ in string.Formatter().parse(tpl) if n)
        return out


class MaxPrice(_Strict):
    """USD per million tokens, as OpenRouter's provider.max_price."""

    prompt: Usd | None = Field(default=None, ge=0)
    completion: Usd | None = Field(default=None, ge=0)


class TierSpec(_Strict):
    """A tier: an ordered fallback chain, given as a list or as an object with options."""

    models: tuple[str, ...] = ()
    native_fallback: Bool = False  # also send up to 3 of the chain as `models` (server-side)
    provider: dict[str, Any] | None = None  # passed through to OpenRouter as-is
    concurrency: Int | None = Field(default=None, ge=1, le=4096)
    stream: Bool | None = None  # stream calls to this tier (None: limits.stream decides)
    # Cost-aware choice, resolved from the catalogue when the run starts:
    cheapest: Bool = False
    count: Int = Field(default=2, ge=1, le=10)
    min_context: Int | None = Field(default=None, ge=1)
    needs: tuple[str, ...] = ()
    max_price: MaxPrice | None = None
    # Send this tier's records through the Batch API (issue 14): about half price, results
    # within 24 h; `batchroute run` exits 7 while batches are in flight (or waits: --wait).
    batch: Bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return {"models": v}
        return v

    _plain_provider = field_validator("provider")(_json_values)

    @model_validator(mode="after")
    def _has_models(self) -> TierSpec:
        if not self.models and not self.cheapest:
            raise ValueError("a tier needs at least one model (or `cheapest: true`)")
        return self


_EXTRA_BODY_BANNED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stream",
        "model",
        "models",
        "messages",
        "prompt",
        "provider",
        "route",
        "usage",
        "plugins",
        "transforms",
    }
)


PRICED_SERVICE_TIERS = ("auto", "default", "flex", "priority")
"""The `service_tier` values the worst case can price: the list price, a cheaper one, or
priority (`budget.PRIORITY_FACTOR`). /models lists no price for the others (`fast`: Anthropic's
fast mode is 6x, `claude-opus-4.6-fast` in the snapshot; `scale`)."""


def _client_tools_only(tools: Any) -> None:
    """Refuse a server tool in `extra_body.tools` (a `type` other than "function", e.g.
    `openrouter:web_search`, or the `web_search_preview` shorthand OpenRouter converts to it):
    the server runs it as often as the model asks, each run billed and its results billed
    again as prompt tokens, so no reservation can be its worst case."""
    if not isinstance(tools, list):
        return
    for i, tool in enumerate(tools):
        kind = tool.get("type", "function") if isinstance(tool, dict) else None
        if kind != "function":
            raise ValueError(
                f"extra_body.tools[{i}].type {kind!r} is a server tool (OpenRouter runs it as "
                "often as the model asks, billing each run and the results it injects), so no "
                'call could be reserved at its worst case: only type "function" tools are '
                "accepted; for one web search per call use an `:online` model id"
            )


def _bounded_bill(v: dict[str, Any]) -> None:
    """Refuse the extra_body fields that make a call's bill unknowable before it is sent."""
    _client_tools_only(v.get("tools"))
    tier = v.get("service_tier")
    if tier is not None and tier not in PRICED_SERVICE_TIERS:
        raise ValueError(
            f"extra_body.service_tier {tier!r} is billed at a price /models does not list, so "
            f"no call could be reserved at its worst case: use one of "
            f"{', '.join(PRICED_SERVICE_TIERS)}"
        )
    reasoning = v.get("reasoning")
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise ValueError(
            "extra_body.reasoning must be a mapping ({effort: ...} or {max_tokens: N})"
        )
    budget = reasoning.get("max_tokens")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= 1_000_000
    ):
        raise ValueError(
            "extra_body.reasoning.max_tokens must be a whole number of tokens from 0 to "
            "1000000 (each call's worst case adds it to max_tokens)"
        )


class RequestSpec(_Strict):
    max_tokens: Int = Field(ge=1, le=1_000_000)  # required: it bounds the cost of every call
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    seed: Int | None = Field(default=None, ge=-(2**63), lt=2**63)  # a JSON int64
    stop: list[str] | None = None
    response_format: dict[str, Any] | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)  # any other OpenRouter field

    @field_validator("extra_body")
    @classmethod
    def _no_cost_changing_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        _json_values(v)
        # These would change what a call may cost (or its shape) behind the budget's back.
        banned = sorted(set(v) & _EXTRA_BODY_BANNED)
        if banned:
            raise ValueError(
                f"extra_body may not set {', '.join(banned)}: use request.max_tokens, or the "
                "tier's native_fallback/provider options"
            )
        _bounded_bill(v)
        return v

    _plain_format = field_validator("response_format")(_json_values)

    def wants_json(self) -> bool:
        fmt = self.response_format or {}
        return fmt.get("type") in ("json_object", "json_schema")


class LimitsSpec(_Strict):
    concurrency: Int = Field(default=32, ge=1, le=4096)
    requests_per_minute: Int | None = Field(default=600, ge=1)
    per_model_rpm: dict[str, Rpm] = Field(default_factory=dict)
    # Calls in flight to one model at most (a provider's own concurrency limit); waiting for
    # it, or for a model's rpm, never holds one of the `concurrency` slots other tiers need.
    per_model_concurrency: dict[str, Rpm] = Field(default_factory=dict)
    timeout_s: Float = Field(default=60, gt=0)  # a whole non-streamed call
    # Streamed calls (the generation id arrives with the first byte, so a call given up on
    # can still be priced): "auto" streams to models that reason (they think for minutes
    # before the first token, and a non-streamed call given up on is billed but unpriced).
    stream: Literal["auto", "always", "never"] = "auto"
    idle_timeout_s: Float = Field(default=60, gt=0)  # a stream with no byte for this long
    # A whole streamed call, keep-alive comments or not (they reset the idle timer): then it
    # is given up on and booked at its reservation until /generation tells its cost.
    stream_max_s: Float = Field(default=1800, gt=0)
    reconcile_wait_s: Float = Field(default=15, ge=0)  # at the end, for /generation answers
    key_check_s: Float = Field(default=60, gt=0)  # how often GET /key is read
    # Circuit breaker: when at least `outage_ratio` of the last `outage_window` calls failed
    # for availability (transport errors, 5xx/408/429 after retries), the run stops (exit 6).
    outage_window: Int = Field(default=50, ge=5, le=100_000)
    outage_ratio: Float = Field(default=0.9, gt=0, le=1)
    max_attempts: Int = Field(default=3, ge=1, le=20)  # per model, before the next in the chain
    backoff_base_s: Float = Field(default=0.5, ge=0)  # first retry waits about this long
    backoff_max_s: Float = Field(default=30, ge=0)
    max_escalations: Int = Field(default=1, ge=0, le=100)  # tiers a record may climb; 0 = never
    cooldown_after: Int = Field(default=5, ge=1)  # consecutive failures that cool a model down
    cooldown_s: Float = Field(default=60, ge=0)
    grace_s: Float = Field(default=30, ge=0)  # after Ctrl-C, in-flight calls get this long
    queue_size: Int = Field(
        default=1024, ge=1, le=1_000_000
    )  # records buffered per tier (bounds memory)


class BudgetSpec(_Strict):
    daily_usd: Usd = Field(gt=0, le=MAX_DAILY_USD)
    scope: Literal["database", "job"] = "database"


class OutputSpec(_Strict):
    database: Path = Path("results.duckdb")
    busy_timeout_s: Float = Field(default=600, gt=0)  # a file held by a reader: retry this long


class EndpointSpec(_Strict):
    base_url: str = "https://openrouter.ai/api/v1"
    api_key_env: str = "OPENROUTER_API_KEY"
    title: str = "batchroute"
    referer: str = "https://github.com/batchroute/batchroute"

    @field_validator("api_key_env")
    @classmethod
    def _a_name(cls, v: str) -> str:
        # The key pasted here by mistake would be echoed by "no API key: set ..." (audit5):
        # refuse anything that is not a variable's name, without repeating it.
        if not v.isascii() or not (v.replace("_", "a").isalnum() and not v[0].isdigit()):
            raise ValueError(
                "must name the environment variable that holds the API key (letters, digits "
                "and _, e.g. OPENROUTER_API_KEY), not hold the key itself (not shown)"
            )
        return v

    @field_validator("base_url")
    @classmethod
    def _a_url(cls, v: str) -> str:
        # Not a URL, every call failed as a connection error booked at its reservation (an
        # overcount), the next run the same (audit6); the key pasted here is not repeated.
        # A user, password or query would hold a secret that the database (`generation_gaps`)
        # and the log keep with the URL: the key goes in the variable `api_key_env` names.
        scheme, _, rest = v.partition("://")
        host = rest.split("/")[0]
        if (
            scheme.lower() not in ("http", "https")
            or not host
            or "@" in host
            or any(c in v for c in "?# \t\n")
        ):
            raise ValueError(
                "must be an http(s) URL of the API, without user, password or query, e.g. "
                "https://openrouter.ai/api/v1 (not shown)"
            )
        return v


class RoutingPolicy(_Strict):
    """The cost dial (issue 12): exactly one of a share of records for the strong tiers or a
    ceiling on the expected cost relative to sending everything to the dearest tier. The
    router's thresholds are calibrated on the input itself before each run."""

    strong_share: Float | None = Field(default=None, ge=0, le=1)
    max_cost_ratio: Float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> RoutingPolicy:
        if (self.strong_share is None) == (self.max_cost_ratio is None):
            raise ValueError(
                "give exactly one of strong_share (share of records for the strong tiers, "
                "0-1) or max_cost_ratio (expected cost / cost of all on the dearest tier, 0-1)"
            )
        return self


class ExperimentSpec(_Strict):
    """A routing experiment (issue 12): a seeded share of records moves `tier_shift` tiers
    (clamped to the cheapest and dearest tier); `results.arm` says which arm each is in."""

    share: Float = Field(gt=0, lt=1)
    tier_shift: Int
    seed: Int = Field(default=0, ge=-(2**63), lt=2**63)

    @field_validator("tier_shift")
    @classmethod
    def _moves(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must move records: +1 (one tier up), -1 (one down), ...")
        return v
