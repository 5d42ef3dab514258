"""Quality checks on an answer (design §6): empty content, cut at `max_tokens`, JSON that does
not parse when the request asked for JSON. A failed check turns the paid answer into a
`QualityFailed`, which the policy escalates to a stronger tier."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

import orjson

from batchroute.errors import QualityFailed
from batchroute.types import Completion


def problem(c: Completion, checks: Collection[str], *, wants_json: bool) -> str | None:
    """The first check `c` fails, as an error type ('empty_content', ...); None if it passes."""
    content = c.content
    if "empty" in checks and (not content or content.isspace()):  # = not strip(): no copy
        return "empty_content"
    if "length" in checks and c.finish_reason == "length":
        return "finish_length"
    if "json" in checks and wants_json:
        try:
            orjson.loads(c.content or "")
        except orjson.JSONDecodeError:
            return "invalid_json"
    return None


def failure(found: str, c: Completion, *, model: str, cost: Decimal) -> QualityFailed:
    """The error a failed check becomes; it keeps the answer's cost and generation id."""
    return QualityFailed(
        found.replace("_", " "),
        model=model,
        status=200,
        error_type=found,
        cost=cost,
        generation_id=c.generation_id,
    )
