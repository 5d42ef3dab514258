"""Pure builders for the simulator's bodies: token counts, fake content, OpenRouter JSON shapes.

No I/O and no state: the handlers in `app.py` decide *what* happens; this module only knows
*how it looks on the wire* (docs/openrouter-api.md §1.2, §1.4, §2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from batchroute.catalog import ModelInfo

COST_QUANTUM = Decimal("1e-12")
USER_ID = "user_sim"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut",
    "labore et dolore magna aliqua simulated answer batch route token budget fallback tier model",
    "provider latency stream chunk usage cost ledger seed scenario fault retry",
)
_VOCAB = " ".join(_WORDS).split(" ")
_FILLER = " ".join(_VOCAB[i * 7 % len(_VOCAB)] for i in range(4096))

_PROVIDERS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "google": "Google AI Studio",
    "meta-llama": "DeepInfra",
    "mistralai": "Mistral",
    "deepseek": "DeepSeek",
    "qwen": "Alibaba",
    "x-ai": "xAI",
    "z-ai": "Z.AI",
    "moonshotai": "Moonshot AI",
    "amazon": "Amazon Bedrock",
    "cohere": "Cohere",
    "nvidia": "Nebius",
    "minimax": "Minimax",
    "baidu": "Baidu",
}


def provider_for(model: str) -> str:
    """A plausible provider display name for a model id (by author; `:free` → Chutes)."""
    if model.endswith(":free"):
        return "Chutes"
    author = model.lstrip("~").split("/", 1)[0]
    return _PROVIDERS.get(author, "Together")


def _text_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode())
    if isinstance(content, list):
        return sum(
            _text_bytes(p.get("text", "")) if isinstance(p, dict) else _text_bytes(p)
            for p in content
        )
    if content is None:
        return 0
    return len(orjson.dumps(content))


def count_prompt_tokens(messages: list[Any]) -> int:
    """ceil(UTF-8 bytes of the text / 4) + 4 per message.

    Always ≤ Σ(bytes + 8), the upper bound batchroute budgets with.
    """
    total = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else m
        total += math.ceil(_text_bytes(content) / 4) + 4
    return total


def make_content(model: str, completion_tokens: int, offset: int, *, json_mode: bool) -> str:
    """Recognisably fake text of ~4 chars per token, starting with `[sim <model>] `."""
    marker = f"[sim {model}] "
    n = max(0, completion_tokens * 4 - len(marker))
    start = offset % (len(_FILLER) // 2)
    body = _FILLER[start : start + n] if n <= len(_FILLER) - start else (_FILLER * 8)[:n]
    if json_mode:
        return orjson.dumps({"sim": model, "text": marker + body[: max(0, n - 24)]}).decode()
    return marker + body


def gen_id(now: float, rng: random.Random) -> str:
    """`gen-<unix>-<20 chars>` drawn from `rng`."""
    return f"gen-{int(now)}-{''.join(rng.choices(_ALNUM, k=20))}"


def quantize_cost(value: Decimal) -> Decimal:
    """12 decimal places (half-even), then at most 15 significant digits (float round-trip)."""
    q = value.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)
    if q.adjusted() >= 3:  # ≥ $1000: 12 places would exceed 15 significant digits
        q = q.quantize(Decimal(1).scaleb(q.adjusted() - 14), rounding=ROUND_HALF_EVEN)
    return q


@dataclass(frozen=True, slots=True)
class Priced:
    """Exact cost split of one billed answer (all quantized)."""

    total: Decimal
    prompt: Decimal
    completion: Decimal


ZERO_PRICE = Priced(Decimal(0), Decimal(0), Decimal(0))

WEB_SEARCH_DEFAULT_USD = Decimal("0.02")
"""One web search on a model without a catalogue `web_search` price: the web plugin's default
5 results x $0.004."""

WEB_SEARCH_RESULTS = 5
"""`num_search_results` of a generation that searched (the web plugin's default)."""


def price(info: ModelInfo, served: str, prompt_tokens: int, completion_tokens: int) -> Priced:
    """List price of a call; `:free` ids and zero prices cost exactly 0."""
    if served.endswith(":free") or info.is_free or info.variable_price:
        return ZERO_PRICE
    return Priced(
        quantize_cost(info.cost(prompt_tokens, completion_tokens)),
        quantize_cost(prompt_tokens * info.prompt),
        quantize_cost(completion_tokens * info.completion),
    )


@dataclass(frozen=True, slots=True)
class Bill:
    """Everything one answer is billed, split by who charges it (all quantized).

    `upstream` is the provider's charge for the tokens (the list price). Without BYOK
    OpenRouter passes it on to the balance; with BYOK the provider bills it to the user's own
    key and OpenRouter charges the balance only `byok_fee`. `search` (web search fees) is
    always charged to the balance and is never part of the upstream cost.
    """

    upstream: Priced
    search: Decimal = Decimal(0)
    searches: int = 0
    byok: bool = False
    byok_fee: Decimal = Decimal(0)

    @property
    def cost(self) -> Decimal:
        """`usage.cost`: what OpenRouter charges the balance (fee or tokens, plus searches)."""
        return quantize_cost((self.byok_fee if self.byok else self.upstream.total) + self.search)

    @property
    def byok_upstream(self) -> Decimal:
        """What the provider bills the user's own key: the upstream cost under BYOK, else 0."""
        return self.upstream.total if self.byok else Decimal(0)

    @property
    def total(self) -> Decimal:
        """What the user pays in all for this answer: balance charge + own-key charge."""
        return self.cost + self.byok_upstream


def bill(upstream: Priced, *, search_usd: Decimal | None, byok_fee_rate: Decimal | None) -> Bill:
    """Bill an answer: `search_usd` is the price of its one web search (None: no search),
    `byok_fee_rate` OpenRouter's BYOK fee rate (None: not a BYOK account)."""
    search = Decimal(0) if search_usd is None else quantize_cost(search_usd)
    if byok_fee_rate is None:
        return Bill(upstream, search, int(search_usd is not None))
    fee = quantize_cost(upstream.total * byok_fee_rate)
    return Bill(upstream, search, int(search_usd is not None), byok=True, byok_fee=fee)


def usage_obj(prompt: int, completion: int, billed: Bill) -> dict[str, Any]:
    """The `usage` object of a chat answer (costs as floats that repr back exactly)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": float(billed.cost),
        "is_byok": billed.byok,
        "prompt_tokens_details": {
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "audio_tokens": 0,
            "video_tokens": 0,
        },
        "cost_details": {
            "upstream_inference_cost": float(billed.upstream.total),
            "upstream_inference_prompt_cost": float(billed.upstream.prompt),
            "upstream_inference_completions_cost": float(billed.upstream.completion),
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0, "audio_tokens": 0},
    }
    if billed.searches:
        usage["server_tool_use"] = {"web_search_requests": billed.searches}
    return usage


def completion_body(
    *,
    gid: str,
    model: str,
    created: int,
    content: str,
    finish: str,
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A non-streaming `chat.completion` object (optionally with a choice-level error).

    `usage=None` leaves the `usage` key out altogether (the `no_usage` fault)."""
    choice: dict[str, Any] = {
        "index": 0,
        "logprobs": None,
        "finish_reason": finish,
        "native_finish_reason": finish,
        "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": None},
    }
    if error is not None:
        choice["error"] = error
    body: dict[str, Any] = {
        "id": gid,
        "provider": provider_for(model),
        "model": model,
        "object": "chat.completion",
        "created": created,
        "system_fingerprint": None,
        "service_tier": None,
        "choices": [choice],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def error_obj(
    code: int | str,
    message: str,
    *,
    error_type: str | None = None,
    metadata: dict[str, Any] | None = None,
    availability: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The inner `error` object: {code, message, metadata?, availability?}."""
    err: dict[str, Any] = {"code": code, "message": message}
    meta = dict(metadata or {})
    if error_type is not None:
        meta["error_type"] = error_type
    if meta:
        err["metadata"] = meta
    if availability is not None:
        err["availability"] = availability
        err["error_type"] = error_type
        err["http_status"] = code
    return err


def envelope(err: dict[str, Any]) -> bytes:
    """{"error": …, "user_id": …} as bytes."""
    return orjson.dumps({"error": err, "user_id": USER_ID})


def availability(
    code: str, model: str, *, retryable: bool, retry_after: float | None = None, **extra: Any
) -> dict[str, Any]:
    """An `error.availability` object (docs §2.5)."""
    av: dict[str, Any] = {"code": code, "retryable": retryable, "requested_models": [model]}
    if retry_after is not None:
        av["retry_after"] = retry_after
    av.update(extra)
    av["docs_url"] = "https://openrouter.ai/docs/api_reference/errors-and-debugging"
    return av


def next_utc_midnight_ms(now: float) -> int:
    """Epoch ms of the next UTC midnight after `now` (X-RateLimit-Reset of daily caps)."""
    day = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + 86400
    return int(midnight * 1000)


def sse(obj: dict[str, Any]) -> bytes:
    """One SSE `data:` event."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


PROCESSING = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"


def chunk(gid: str, model: str, created: int, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """A `chat.completion.chunk` skeleton."""
    return {
        "id": gid,
        "provider": provider_for(model),
        "model": model,
        "object": "chat.completion.chunk",
        "created": created,
        "system_fingerprint": None,
        "choices": choices,
    }


def split_content(content: str, pieces: int) -> list[str]:
    """Cut `content` into at most `pieces` non-empty parts."""
    if not content:
        return []
    size = max(1, math.ceil(len(content) / pieces))
    return [content[i : i + size] for i in range(0, len(content), size)]


def iso(ts: float) -> str:
    """ISO-8601 UTC timestamp."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
