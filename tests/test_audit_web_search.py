"""Web search is reserved at what it may really bill, or refused (money3).

The `web` plugin (an `:online` model id) and `web_search_options` run a search and inject its
results into the prompt as a system message: they are billed as prompt tokens on top of the
search fee (openrouter-api.md §5; the plugin fetches 5 results by default, and how much text a
result brings is not bounded by anything documented but the model's context). The reservation
counted the search fee and the request's own messages only, so a run whose calls were all in
flight at once billed past its cap. An OpenRouter server tool in `extra_body.tools`
(`openrouter:web_search`: the model decides how often to search) was accepted and reserved as
a tool definition's bytes.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from factories import standin_job, texts
from subprocs import query, run_cli_async
from test_billing_standin import COMPLETION_PRICE, MODEL, PROMPT_PRICE, StandIn

CONTEXT = 16_000  # the model's context window (/models `context_length`)
RESULTS = 5  # the web plugin's default max_results
RESULT_TOKENS = 750  # ~3,000 characters a result: Exa's typical adaptive size
SEARCH_USD = Decimal("0.02")  # $4 per 1,000 results, 5 results
N = 16
CAP = Decimal("0.2")


@dataclass
class Searching(StandIn):
    """Runs the web plugin for `:online` ids: bills the search fee and the injected results as
    prompt tokens. Its model has a 16k context."""

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        if str(body["model"]).endswith(":online"):
            injected = RESULTS * RESULT_TOKENS
            extra = injected * PROMPT_PRICE + SEARCH_USD
            self.billed[-1] += extra
            usage["prompt_tokens"] += injected
            usage["total_tokens"] += injected
            usage["cost"] = float(self.billed[-1])
            usage["cost_details"] = {"upstream_inference_cost": float(self.billed[-1] - SEARCH_USD)}
            usage["server_tool_use"] = {"web_search_requests": 1}
        return gid, usage

    async def models(self, _: web.Request) -> web.Response:
        model = {
            "id": MODEL,
            "context_length": CONTEXT,
            "pricing": {
                "prompt": str(PROMPT_PRICE),
                "completion": str(COMPLETION_PRICE),
                "web_search": "0.02",
            },
            "top_provider": {"context_length": CONTEXT, "max_completion_tokens": 4_096},
            "supported_parameters": ["max_tokens"],
        }
        return web.json_response({"data": [model]})


def _job(tmp_path: Path, base_url: str, model: str, **request: Any) -> Path:
    limits = {"concurrency": N, "reconcile_wait_s": 0.5}
    path = standin_job(
        tmp_path, base_url, model=model, cap=CAP, records=texts(N), limits=limits, request=request
    )
    return path


async def test_injected_search_results_are_reserved(tmp_path: Path, serve: Any) -> None:
    """Before: 8 calls went out at once, each reserved at $0.0228 (the search fee and the
    messages) and billed $0.0270 (5 results of ~750 tokens injected): $0.2159 billed against
    a $0.20 cap."""
    standin = Searching("ok", generation_known=False)
    path = _job(tmp_path, await serve(standin), MODEL + ":online")
    code, err = await run_cli_async("run", str(path))
    assert code in (0, 3), err
    assert standin.billed, "the stand-in billed nothing: the test proves nothing"
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total <= CAP, (standin.total, CAP, len(standin.billed))


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "openrouter:web_search"},
        {"type": "openrouter:web_search", "parameters": {"max_results": 3}},
        {"type": "web_search_preview"},
    ],
)
async def test_a_server_tool_is_refused_naming_the_key(tmp_path: Path, tool: Any) -> None:
    """Before: accepted (`validate` exit 0) and reserved as the tool definition's bytes, while
    the server runs as many searches as the model asks for, each billed and injected."""
    path = _job(tmp_path, "http://127.0.0.1:9/api/v1", MODEL, extra_body={"tools": [tool]})
    code, err = await run_cli_async("validate", str(path))
    assert code != 0, err
    assert "extra_body.tools[0]" in err, err
    assert str(tool["type"]) in err, err


async def test_function_tools_are_still_accepted(tmp_path: Path) -> None:
    """Client tools (`type: function`) are billed as prompt tokens only: still accepted."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    path = _job(tmp_path, "http://127.0.0.1:9/api/v1", MODEL, extra_body={"tools": [tool]})
    code, err = await run_cli_async("validate", str(path))
    assert code == 0, err
