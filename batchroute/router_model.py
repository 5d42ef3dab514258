"""The learned router's model file: its format and parser (issue 12). Pure: bytes in, `Model` out.

MAGIC, a little-endian uint32 header length, a JSON header (classes, intercepts, complexity cut
points, score scale, number of routing levels, meta), then the uint32 hashed feature ids and, per
feature, its float32 weights (one per task class, then the routing heads). Split out of
`learned` (which reads the file from the package and predicts) to keep each under 400 lines.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Final

MODEL_FILE: Final = "data/router_model.bin"
MAGIC: Final = b"BRLR1\n"


@dataclass(frozen=True, slots=True)
class Model:
    """The weights: `weights[row]` holds one weight per task type, then one per routing head
    (`n_levels` quality heads, then `n_levels` log cost factor heads)."""

    classes: tuple[str, ...]
    rows: dict[int, tuple[float, ...]]  # feature id → its row of `weights` (the same tuple)
    weights: list[tuple[float, ...]]  # per row: one weight per class, then the routing heads
    intercepts: tuple[float, ...]
    complexity_cuts: tuple[float, ...]  # prompt-length cut points for low/medium/high/very_high
    score_scale: float  # score = sigmoid(scale · (premium quality − best cheap level's))
    n_levels: int  # routing heads: n_levels quality heads, then n_levels log cost factors
    meta: dict[str, object]


def parse(blob: bytes) -> Model:
    """A router model file's contents (ValueError naming the file if damaged)."""
    if not blob.startswith(MAGIC):
        raise ValueError(f"{MODEL_FILE}: not a batchroute router model")
    pos = len(MAGIC)
    try:
        (hlen,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        header = json.loads(blob[pos : pos + hlen])
    except (struct.error, ValueError) as exc:
        raise ValueError(f"{MODEL_FILE}: damaged header ({exc})") from exc
    pos += hlen
    n_levels = int(header["n_levels"])
    n, k = int(header["n_features"]), len(header["classes"]) + 2 * n_levels
    if len(blob) != pos + 4 * n + 4 * n * k:
        raise ValueError(f"{MODEL_FILE}: truncated or damaged ({len(blob)} bytes)")
    ids = array("I")
    ids.frombytes(blob[pos : pos + 4 * n])
    pos += 4 * n
    weights = array("f")
    weights.frombytes(blob[pos : pos + 4 * n * k])
    if sys.byteorder == "big":
        ids.byteswap()
        weights.byteswap()
    # row i is weights[i*k : (i+1)*k]: zipped from the k strided columns (C-level, no loop)
    rows_w: list[tuple[float, ...]] = [()] * n
    if k:
        rows_w = list(zip(*(weights[j::k] for j in range(k)), strict=True))
    return Model(
        classes=tuple(header["classes"]),
        rows=dict(zip(ids, rows_w, strict=True)),
        weights=rows_w,
        intercepts=tuple(float(x) for x in header["intercepts"]),
        complexity_cuts=tuple(float(x) for x in header["complexity_cuts"]),
        score_scale=float(header["score_scale"]),
        n_levels=n_levels,
        meta=header.get("meta", {}),
    )
