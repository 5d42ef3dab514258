"""batchroute: run LLM batch jobs on OpenRouter cheaply and safely."""

from __future__ import annotations

__version__ = "0.1.0"
