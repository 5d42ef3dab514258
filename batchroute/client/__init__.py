"""Client stage: the OpenRouter HTTP API over one aiohttp session (`OpenRouterClient`).

Parts: `session` (the façade), `stream` (SSE), `parse` (answers, usage), `status` (failures →
error tree). It does not retry, and knows nothing of tiers, budget or storage.
"""

from __future__ import annotations

from batchroute.client.parse import byok_of, parse_completion, parse_usage
from batchroute.client.session import OpenRouterClient
from batchroute.client.status import classify_error

__all__ = [
    "OpenRouterClient",
    "byok_of",
    "classify_error",
    "parse_completion",
    "parse_usage",
]
