"""Derive the shipped price catalogue from the shared /models snapshot.

Source: shared/data/openrouter-models-snapshot.json, a real `GET /api/v1/models`
response (356 models, fetched 2026-05-12..20, sha256 c64fbb6c…, via sinkers/aiscanner).
Pricing strings are copied byte for byte; descriptions and other bulky fields are dropped.

    python tools/make_catalog.py ../shared/data/openrouter-models-snapshot.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

KEEP = (
    "id",
    "canonical_slug",
    "name",
    "created",
    "context_length",
    "pricing",
    "top_provider",
    "supported_parameters",
    "expiration_date",
)


def main(src: str) -> None:
    raw = Path(src).read_bytes()
    models = json.loads(raw)["data"]
    trimmed = []
    for m in models:
        t = {k: m[k] for k in KEEP if k in m}
        t["architecture"] = {"modality": m["architecture"]["modality"]}
        trimmed.append(t)
    out = {
        "source": "shared/data/openrouter-models-snapshot.json"
        " (OpenRouter GET /api/v1/models, May 2026)",
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "fetched": "2026-05-20",
        "data": trimmed,
    }
    dest = Path(__file__).resolve().parent.parent / "batchroute" / "data" / "catalog.json"
    dest.write_text(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n")
    print(f"wrote {len(trimmed)} models to {dest} ({dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/openrouter-models-snapshot.json")
