"""The daily cap against what OpenRouter really bills for a call's *parameters* (audit).

A provider bills more than the messages as prompt tokens: a `response_format` JSON schema and
`tools` definitions are rendered into the prompt and billed as input tokens, and with tools
(or a schema enforced through tool use) Anthropic adds its own tool-use system prompt, up to
530 tokens (docs.anthropic.com "tool use pricing and tokens"; OpenAI's token-counting guide:
"tools and schemas add tokens"). The reservation's prompt bound counted only the messages'
bytes, so a job with a sizeable schema reserved far less than a call costs: the cap did not
hold, and an answer whose cost was above twice its reservation was booked at the reservation
(the database said less than the bill) until /generation told the real figure.

The stand-in bills like the real API: prompt tokens are a quarter of the bytes of the
messages *and* of the schema/tools (a real tokenizer's rate, not a worst case), plus the
tool-use system prompt when tools are sent. Real CLI in a subprocess, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import (
    COMPLETION_PRICE,
    COMPLETION_TOKENS,
    MODEL,
    PROMPT_PRICE,
    Q,
    StandIn,
)

CAP = Decimal("0.03")
TOOL_PROMPT_TOKENS = 346  # Claude's tool-use system prompt (auto), added when tools are sent


def _schema(fields: int) -> dict[str, Any]:
    """An extraction schema as jobs write them: named fields, each with a description."""
    props = {
        f"field_{i:02d}": {
            "type": "string",
            "description": f"The value of attribute {i} as stated in the text, verbatim; "
            "empty when the text does not say, never guessed or inferred from context.",
        }
        for i in range(fields)
    }
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "extraction",
            "strict": True,
            "schema": {"type": "object", "properties": props, "required": list(props)},
        },
    }


@dataclass
class SchemaBiller(StandIn):
    """Bills the schema and the tools as prompt tokens, as providers do."""

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        text = sum(len(m["content"].encode()) for m in body["messages"])
        extra = sum(len(orjson.dumps(body[k])) for k in ("response_format", "tools") if k in body)
        prompt_tokens = (text + extra) // 4 + 4 * len(body["messages"])
        if "tools" in body:
            prompt_tokens += TOOL_PROMPT_TOKENS
        cost = (prompt_tokens * PROMPT_PRICE + COMPLETION_TOKENS * COMPLETION_PRICE).quantize(
            Q, ROUND_HALF_EVEN
        )
        gid = f"gen-{len(self.generations) + 1:06d}"
        self.billed.append(cost)
        self.generations[gid] = {
            "id": gid, "total_cost": float(cost), "upstream_inference_cost": float(cost),
            "is_byok": False,
        }  # fmt: skip
        usage = {
            "prompt_tokens": prompt_tokens, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": prompt_tokens + COMPLETION_TOKENS, "cost": float(cost),
            "is_byok": False, "cost_details": {"upstream_inference_cost": float(cost)},
        }  # fmt: skip
        return gid, usage


def _job(tmp_path: Path, base_url: str, request: dict[str, Any], n: int = 60) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(
        tmp_path,
        quality=[],
        endpoint={"base_url": base_url, "api_key_env": KEY_ENV},
        request={"max_tokens": 256, **request},
        budget={"daily_usd": str(CAP)},
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": False}}
    job["limits"] = {**job["limits"], "concurrency": 8, "max_attempts": 1, "reconcile_wait_s": 10}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _one(db: Path, sql: str) -> Decimal:
    return Decimal(query(db, sql)[0][0] or 0)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "record_extraction",
            "description": "Record the attributes extracted from the text.",
            "parameters": _schema(24)["json_schema"]["schema"],
        },
    }
]


@pytest.mark.parametrize(
    "request_fields",
    [
        pytest.param({"response_format": _schema(48)}, id="json_schema"),
        pytest.param({"extra_body": {"tools": TOOLS, "tool_choice": "auto"}}, id="tools"),
    ],
)
@pytest.mark.parametrize("generation_known", [True, False])
async def test_the_cap_holds_when_the_schema_and_tools_are_billed_as_prompt(
    tmp_path: Path, serve: Any, request_fields: dict[str, Any], generation_known: bool
) -> None:
    """Before, cap $0.03: with the 48-field schema 16 calls were billed $0.0752 (each
    reserved at ~$0.0018, billed ~$0.0047), and with /generation silent the database said
    $0.0296 (each booked at its reservation: the bill was over twice that); with the tools,
    12 calls billed $0.0425. Now 3 and 6 calls, $0.0141 and $0.0212, booked exactly."""
    standin = SchemaBiller("ok", generation_known=generation_known)
    job = _job(tmp_path, await serve(standin), request_fields)
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(job))
    assert code in (0, 3), err
    assert standin.billed, "nothing billed: the test proves nothing"
    attempts = _one(db, "SELECT sum(cost_usd) FROM attempts")
    results = _one(db, "SELECT sum(cost_usd) FROM results")
    assert standin.total <= CAP, f"billed {standin.total} over the cap {CAP}"
    assert attempts >= standin.total, f"database {attempts} below the bill {standin.total}"
    assert results == attempts
    assert code == 3  # the cap, not the input, ended the run: it was used, not bypassed
