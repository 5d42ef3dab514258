"""The job file: `JobSpec`, validated once at the edge, then passed around as data.

Unknown keys are errors that name the file and key path. Paths in a job file are relative to the
job file. This module reads YAML and nothing else: no network, no database, no environment.
"""

from __future__ import annotations

import string
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from batchroute.errors import SpecError
from batchroute.types import (
    COMPLEXITIES,
    DEFAULT_COMPLEXITY_ROUTING,
    DEFAULT_ROUTING,
    TASK_TYPES,
    TIER_NAMES,
)

DEFAULT_TIERS: dict[str, list[str]] = {
    "budget": ["meta-llama/llama-3.1-8b-instruct", "qwen/qwen-2.5-7b-instruct"],
    "mid": ["openai/gpt-4o-mini", "google/gemini-2.0-flash-001"],
    "standard": ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"],
    "premium": ["openai/o1", "openai/o3"],
}
"""Design §2's tiers, cheapest → strongest; every id is in the May 2026 catalogue."""

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
        return v

    _plain_format = field_validator("response_format")(_json_values)

    def wants_json(self) -> bool:
        fmt = self.response_format or {}
        return fmt.get("type") in ("json_object", "json_schema")


class LimitsSpec(_Strict):
    concurrency: Int = Field(default=32, ge=1, le=4096)
    requests_per_minute: Int | None = Field(default=600, ge=1)
    per_model_rpm: dict[str, Rpm] = Field(default_factory=dict)
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


class JobSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    input: Path
    id_field: str | None = None
    prompt: PromptSpec
    task: str | None = None
    task_field: str | None = None
    classifier: Literal["heuristic"] = "heuristic"
    tiers: dict[str, TierSpec] = Field(
        default_factory=lambda: {k: TierSpec(models=tuple(v)) for k, v in DEFAULT_TIERS.items()}
    )
    routing: dict[str, str] = Field(default_factory=dict)
    complexity_routing: dict[str, str] = Field(default_factory=dict)
    quality: tuple[QualityCheck, ...] = QUALITY_CHECKS
    # What climbs to the next tier: answers that fail a quality check (the default), and with
    # "unavailable" also records whose whole chain was down (dearer, so opt-in).
    escalate_on: tuple[Literal["quality", "unavailable"], ...] = ("quality",)
    request: RequestSpec
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    budget: BudgetSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    endpoint: EndpointSpec = Field(default_factory=EndpointSpec)
    path: Path | None = Field(default=None, exclude=True)  # where the job file was read from

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | None) -> str | None:
        if v is not None and v not in TASK_TYPES:
            raise ValueError(f"unknown task type {v!r}; known: {', '.join(TASK_TYPES)}")
        return v

    @model_validator(mode="after")
    def _routing_targets(self) -> JobSpec:
        if not self.tiers:
            raise ValueError("tiers: at least one tier is needed")
        for table, keys in ((self.routing, TASK_TYPES), (self.complexity_routing, COMPLEXITIES)):
            for k, tier in table.items():
                if k not in keys:
                    raise ValueError(f"routing key {k!r} is not one of {', '.join(keys)}")
                if tier not in self.tiers:
                    raise ValueError(f"routing {k!r} → {tier!r}: no such tier")
        return self

    def tier_for_task(self, task_type: str) -> str:
        """Tier for a task type: the job's routing, else the default table, else the nearest."""
        tier = self.routing.get(task_type) or DEFAULT_ROUTING.get(task_type, "mid")
        return self._existing(tier)

    def tier_for_complexity(self, complexity: str) -> str:
        tier = self.complexity_routing.get(complexity) or DEFAULT_COMPLEXITY_ROUTING.get(
            complexity, "mid"
        )
        return self._existing(tier)

    def _existing(self, tier: str) -> str:
        """Map a default tier name onto this job's tiers when the job renamed or dropped some."""
        if tier in self.tiers:
            return tier
        names = list(self.tiers)
        rank = TIER_NAMES.index(tier) if tier in TIER_NAMES else 1
        return names[min(rank, len(names) - 1)]

    def next_tier(self, tier: str) -> str | None:
        names = list(self.tiers)
        i = names.index(tier)
        return names[i + 1] if i + 1 < len(names) else None

    @property
    def database_path(self) -> Path:
        return self.output.database


def _key_path(loc: tuple[int | str, ...]) -> str:
    return (
        ".".join(str(p) for p in loc if p not in ("function-before", "function-after")) or "(top)"
    )


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice: PyYAML would silently keep the last one."""

    def __init__(self, key: object, first_line: int, mark: yaml.Mark) -> None:
        self.key = key
        self.first_line = first_line
        self.line = mark.line + 1
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=mark)


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that rejects a key given twice in one mapping (`budget:` twice would
    otherwise mean the last one wins, silently). Merge keys (`<<: *anchor`) may still be
    overridden: that is what they are for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class says so, with its line
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, first, key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read_yaml(p: Path) -> Any:
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError("cannot read the job file: no such file", path=str(p)) from None
    except IsADirectoryError:
        raise SpecError("cannot read the job file: it is a folder", path=str(p)) from None
    except OSError as exc:
        raise SpecError(f"cannot read the job file: {exc.strerror or exc}", path=str(p)) from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a Windows editor is fine
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {col}); save the job file as UTF-8",
            path=str(p),
            key=f"line {line}",
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except DuplicateKeyError as exc:
        raise SpecError(
            f"duplicate key {exc.key!r} (first given on line {exc.first_line}): a key may "
            "appear only once in a mapping",
            path=str(p),
            key=f"line {exc.line}",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise SpecError(f"not valid YAML: {exc}", path=str(p), key=where) from None
    except RecursionError:
        raise SpecError("nested too deeply to be a job file", path=str(p)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a job file; relative paths resolve against the job file's folder.

    Raises:
        SpecError: naming the file and the key path (or line) of the first problems.
    """
    p = Path(path)
    data = _read_yaml(p)
    if not isinstance(data, dict):
        raise SpecError("a job file must be a YAML mapping", path=str(p))
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_key_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()[:8]
        ]
        raise SpecError("; ".join(problems), path=str(p)) from None
    except RecursionError:
        raise SpecError("nested too deeply to be a job file", path=str(p)) from None
    base = p.resolve().parent
    return spec.model_copy(
        update={
            "input": (base / spec.input).resolve(),
            "output": spec.output.model_copy(
                update={"database": (base / spec.output.database).resolve()}
            ),
            "path": p.resolve(),
        }
    )
