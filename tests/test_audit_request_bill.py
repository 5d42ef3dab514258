"""The daily cap against what a call's *request fields* make OpenRouter bill (cachew audit).

Three fields of `request.extra_body` raise a call's bill above what its reservation counted
(`RunPlan.worst_call`: prompt bound × prompt price + max_tokens × completion price):

- `cache_control` (top level: OpenRouter's automatic prompt caching for Anthropic and Qwen):
  every prompt token is written to the cache and billed at `pricing.input_cache_write` (1.25×
  the prompt price in /models), or with `ttl: "1h"` at twice the prompt price (Anthropic; the
  `input_cache_write_1h` key is in no model of the snapshot). The stand-in's tokenizer here
  counts a token per UTF-8 byte: the rate design §5's prompt bound takes as the worst (a
  byte-fallback tokenizer on text it does not know); with it, the 5 % BYOK margin no longer
  covers a 25 % dearer prompt.
- `reasoning.max_tokens` above `max_tokens`: reasoning tokens are output tokens, billed as
  such; whether they count within `max_tokens` when the budget asked for is larger is nowhere
  documented (openrouter-api.md), so the stand-in thinks to its budget, then answers in full.
- `service_tier: fast`: a tier `/models` lists no price for; Anthropic's fast mode is priced at
  6× (`anthropic/claude-opus-4.6-fast` against `anthropic/claude-opus-4.6` in the snapshot).

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from factories import job_dict, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import COMPLETION_PRICE, MODEL, PROMPT_PRICE, Q, StandIn

CAP = Decimal("0.05")
CACHE_WRITE_PRICE = PROMPT_PRICE * Decimal("1.25")  # Anthropic's 5-minute cache write
CACHE_WRITE_1H_FACTOR = 2  # Anthropic's 1-hour cache write: twice the prompt price
FAST_FACTOR = 6  # claude-opus-4.6-fast against claude-opus-4.6 in the snapshot


@dataclass
class Biller(StandIn):
    """Bills each call as its request fields say (see the module's docstring)."""

    bytes_per_token: int = 4

    async def models(self, _: web.Request) -> web.Response:
        pricing = {
            "prompt": str(PROMPT_PRICE),
            "completion": str(COMPLETION_PRICE),
            "input_cache_read": str(PROMPT_PRICE / 10),
            "input_cache_write": str(CACHE_WRITE_PRICE),
        }
        model = {
            "id": MODEL,
            "context_length": 200_000,
            "pricing": pricing,
            "top_provider": {"context_length": 200_000, "max_completion_tokens": 64_000},
            "supported_parameters": ["max_tokens", "reasoning", "include_reasoning"],
        }
        return web.json_response({"data": [model]})

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        text = sum(len(m["content"].encode()) for m in body["messages"])
        prompt = text // self.bytes_per_token + 4 * len(body["messages"])
        price, written = PROMPT_PRICE, 0
        cache = body.get("cache_control")
        if isinstance(cache, dict):  # the whole prompt is written to the cache
            written = prompt
            price = CACHE_WRITE_PRICE
            if cache.get("ttl") == "1h":
                price = PROMPT_PRICE * CACHE_WRITE_1H_FACTOR
        reasoning = int((body.get("reasoning") or {}).get("max_tokens") or 0)
        out = body["max_tokens"] + reasoning  # thinks to its budget, then a full answer
        factor = FAST_FACTOR if body.get("service_tier") == "fast" else 1
        cost = ((prompt * price + out * COMPLETION_PRICE) * factor).quantize(Q, ROUND_HALF_EVEN)
        gid = f"gen-{len(self.generations) + 1:06d}"
        self.billed.append(cost)
        self.generations[gid] = {"id": gid, "total_cost": float(cost), "is_byok": False}
        usage = {
            "prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": written},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
            "cost": float(cost), "is_byok": False,
            "cost_details": {"upstream_inference_cost": float(cost)},
        }  # fmt: skip
        return gid, usage


def _job(tmp_path: Path, base_url: str, max_tokens: int, extra: dict[str, Any]) -> Path:
    # Long records (~2 kB each): the prompt is most of a call's bill when it is cached.
    records = [
        {"id": f"r{i:03d}", "target_lang": "French", "text": f"Paragraph {i}. " + "x" * 2000}
        for i in range(40)
    ]
    write_jsonl(tmp_path / "in.jsonl", records)
    job = job_dict(
        tmp_path,
        quality=[],
        endpoint={"base_url": base_url, "api_key_env": KEY_ENV},
        request={"max_tokens": max_tokens, "extra_body": extra},
        budget={"daily_usd": str(CAP)},
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": False}}
    job["limits"] = {**job["limits"], "concurrency": 4, "max_attempts": 1, "reconcile_wait_s": 5}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _sum(db: Path, sql: str) -> Decimal:
    return Decimal(query(db, sql)[0][0] or 0)


@pytest.mark.parametrize(
    ("extra", "max_tokens", "bytes_per_token"),
    [
        pytest.param({"cache_control": {"type": "ephemeral"}}, 16, 1, id="cache_5m"),
        pytest.param({"cache_control": {"type": "ephemeral", "ttl": "1h"}}, 16, 1, id="cache_1h"),
        pytest.param({"reasoning": {"max_tokens": 2048}}, 256, 4, id="reasoning_budget"),
    ],
)
async def test_the_cap_holds_for_what_the_request_fields_bill(
    tmp_path: Path, serve: Any, extra: dict[str, Any], max_tokens: int, bytes_per_token: int
) -> None:
    """Before (cap $0.05): cache_5m 13 calls billed $0.0514, cache_1h 9 calls $0.0565,
    reasoning_budget 10 calls $0.1460 (each reserved at max_tokens, billed for 2,304 output
    tokens). Now each call is reserved at its cache-write price or with its reasoning budget
    added: 12 calls $0.0475, 7 calls $0.0439, 3 calls $0.0438."""
    standin = Biller("ok", bytes_per_token=bytes_per_token)
    job = _job(tmp_path, await serve(standin), max_tokens, extra)
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(job))
    assert code in (0, 3), err
    assert standin.billed, "nothing billed: the test proves nothing"
    attempts = _sum(db, "SELECT sum(cost_usd) FROM attempts")
    bill = f"{len(standin.billed)} calls billed {standin.total} (database {attempts})"
    assert standin.total <= CAP, f"{bill} > {CAP}"
    assert attempts >= standin.total, f"database {attempts} below the bill {standin.total}"
    assert code == 3  # the cap, not the input, ended the run: it was used, not bypassed


async def test_a_service_tier_with_no_known_price_is_refused(tmp_path: Path, serve: Any) -> None:
    """`service_tier: fast` may be billed at 6× (Anthropic's fast mode) and /models gives no
    price for it: before, 10 calls billed $0.1390 against the $0.05 cap (each reserved at the
    standard price); now the job is refused before any call, naming the key."""
    standin = Biller("ok")
    job = _job(tmp_path, await serve(standin), 256, {"service_tier": "fast"})
    code, err = await run_cli_async("run", str(job))
    assert code == 2, f"exit {code}: {len(standin.billed)} calls billed {standin.total}"
    assert "service_tier" in err, err
    assert "fast" in err, err
    assert not standin.billed, f"billed {standin.total} before the job was refused"
