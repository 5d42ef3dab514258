"""A call that priority-tier endpoints may serve is reserved at priority rates (audit).

openrouter-api.md §5: `:nitro` "also makes priority-tier endpoints eligible, billed at priority
rates if they serve" (OpenAI's priority processing is twice the standard price), and
`request.extra_body.service_tier: priority` asks for one. `/models` lists no priority price, and
`Catalog.get` prices `model:nitro` at its base model's price, so the reservation was the
standard worst case: before the fix, 7 calls billed $0.0222 against the $0.02 cap. The plan now
reserves such calls at `budget.PRIORITY_FACTOR` (2) times their worst case.

Real CLI in a subprocess against a stand-in that bills every call at twice the list price.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, run_cli_async
from test_billing_standin import COMPLETION_PRICE, MODEL, PROMPT_PRICE, Q, StandIn

CAP = Decimal("0.02")
PRIORITY = 2  # OpenAI: priority processing at twice the standard per-token price


@dataclass
class Priority(StandIn):
    """Serves every call on a priority-tier endpoint, 256 tokens (max_tokens), at 2x."""

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        prompt = sum(len(m["content"].encode()) // 4 + 4 for m in body["messages"])
        out = body["max_tokens"]
        cost = ((prompt * PROMPT_PRICE + out * COMPLETION_PRICE) * PRIORITY).quantize(
            Q, ROUND_HALF_EVEN
        )
        gid = f"gen-{len(self.generations) + 1:06d}"
        self.billed.append(cost)
        self.generations[gid] = {"id": gid, "total_cost": float(cost), "is_byok": False}
        usage = {"prompt_tokens": prompt, "completion_tokens": out, "cost": float(cost),
                 "is_byok": False, "service_tier": "priority"}  # fmt: skip
        return gid, usage


@pytest.mark.parametrize("ask", ["nitro", "service_tier"])
async def test_the_cap_holds_for_calls_billed_at_priority_rates(
    tmp_path: Path, serve: Any, ask: str
) -> None:
    standin = Priority("ok")
    write_jsonl(tmp_path / "in.jsonl", texts(40))
    job = job_dict(
        tmp_path,
        quality=[],
        endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV},
        budget={"daily_usd": str(CAP)},
    )
    model = f"{MODEL}:nitro" if ask == "nitro" else MODEL
    job["tiers"] = {"premium": {"models": [model], "stream": False}}
    if ask == "service_tier":
        job["request"] = {**job.get("request", {}), "extra_body": {"service_tier": "priority"}}
    job["limits"] = {**job["limits"], "concurrency": 4}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, err = await run_cli_async("run", str(path))
    assert code in (0, 3), err
    assert standin.billed
    assert standin.total <= CAP, f"billed {standin.total} over the cap {CAP}"
