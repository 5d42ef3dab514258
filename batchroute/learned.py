"""Learned router: rendered prompt → task type + a score for a stronger tier (issue 12).

Three linear models over one set of hashed features: a multinomial logistic regression for the
task type (trained on Auto-J scenario prompts), and two ridge regressions for the routing score:
the expected *quality gain* of the premium tier over the best cheaper capable tier (RouterBench
correctness, arena-bench judge scores) and the log of the premium tier's *cost* for the prompt
(RouterBench). The score ranks prompts by gain per relative dollar, the quantity a cost-capped
router should spend on first. All were fitted by `tools/train_router.py`;
`docs/router-model-card.md` says on what and how well.

Inference is pure Python and deterministic: features are the lower-cased words and word pairs
of the prompt (head and tail, like the heuristic) plus a length bucket, each hashed with CRC-32
(not `hash()`, which is salted per interpreter); a feature counts once however often it occurs.
The model file holds only hashed feature ids and weights, no training text. It is read once,
lazily, from the package (`importlib.resources`); neither scikit-learn nor the training data is
needed here.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
import threading
from array import array
from dataclasses import dataclass
from importlib import resources
from itertools import pairwise
from typing import Final
from zlib import crc32

from . import task_head
from .types import COMPLEXITIES, TASK_TYPES, Classification

MODEL_FILE: Final = "data/router_model.bin"
MAGIC: Final = b"BRLR1\n"
HEAD: Final = 1200  # the instruction is nearly always near the start of a prompt...
TAIL: Final = 400  # ...or at its very end
SYSTEM_HEAD: Final = 400
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")
_MASK: Final = (1 << 32) - 1
_MIX: Final = 0x9E3779B1  # an odd 32-bit constant (golden ratio): spreads a pair's id


def features(text: str, *, system: str = "") -> list[int]:
    """The sorted hashed feature ids of a prompt (the same function trains and serves).

    Each distinct token is hashed once with CRC-32; a word pair's id is mixed from its two
    tokens' ids with integer arithmetic (no string join or encode per pair: that is the hot loop).
    """
    window = text if len(text) <= HEAD + TAIL else text[:HEAD] + "\n" + text[-TAIL:]
    toks = _TOKEN.findall(window.lower())
    toks_s = ["s:" + t for t in _TOKEN.findall(system[:SYSTEM_HEAD].lower())] if system else []
    ids = {t: crc32(t.encode("utf-8", "surrogatepass")) for t in {*toks, *toks_s}}
    uni = [ids[t] for t in toks]
    out = set(ids.values())
    out.update([(a * _MIX ^ b) & _MASK for a, b in pairwise(uni)])
    out.add(crc32(b"#len%d" % min(int(math.log2(len(text) + 1)), 16)))
    out.add(crc32(b"#lines%d" % (min(text.count("\n"), 20) // 4)))
    return sorted(out)


@dataclass(frozen=True, slots=True)
class Model:
    """The weights: `weights[row]` holds one weight per task type, then gain's, then log cost's."""

    classes: tuple[str, ...]
    rows: dict[int, int]  # feature id → row
    weights: list[tuple[float, ...]]  # per row: one weight per class, then gain, then log cost
    intercepts: tuple[float, ...]
    complexity_cuts: tuple[float, ...]  # prompt-length cut points for low/medium/high/very_high
    score_scale: float  # z = scale · gain / exp(log cost − cost_ref); score = sigmoid(z)
    cost_ref: float
    meta: dict[str, object]


def _parse(blob: bytes) -> Model:
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
    n, k = int(header["n_features"]), len(header["classes"]) + 2
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
    rows_w = [tuple(weights[i * k : (i + 1) * k]) for i in range(n)]
    return Model(
        classes=tuple(header["classes"]),
        rows={f: i for i, f in enumerate(ids)},
        weights=rows_w,
        intercepts=tuple(float(x) for x in header["intercepts"]),
        complexity_cuts=tuple(float(x) for x in header["complexity_cuts"]),
        score_scale=float(header["score_scale"]),
        cost_ref=float(header["cost_ref"]),
        meta=header.get("meta", {}),
    )


_model: Model | None = None
_lock = threading.Lock()


def load_model() -> Model:
    """The shipped model, read once (thread-safe)."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                blob = resources.files("batchroute").joinpath(MODEL_FILE).read_bytes()
                _model = _parse(blob)
    return _model


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def predict(text: str, *, system: str = "", model: Model | None = None) -> tuple[str, float]:
    """(task type, routing score in (0, 1)) for one prompt.

    The score is a logistic squash of the predicted premium gain divided by the predicted premium
    cost relative to a typical prompt's: monotone in "quality bought per dollar by going strong".
    """
    m = model or load_model()
    ids = features(text, system=system)
    task, score = _predict_ids(ids, m)
    # The shipped router file holds the routing heads only (no classes): the task type comes
    # from the task head, stacked on the heuristic's verdict (task_head.py, its own file).
    return task or task_head.predict(ids, text, system=system), score


def _predict_ids(ids: list[int], m: Model) -> tuple[str, float]:
    """(the router file's own task type, or "" when it has no task columns; routing score)."""
    get = m.rows.get
    rows = [r for r in map(get, ids) if r is not None]
    # zip(*rows) turns the present rows into one tuple per output: C-level work, no boxing
    sums = [sum(c) for c in zip(*map(m.weights.__getitem__, rows), strict=True)] or [0.0] * len(
        m.intercepts
    )
    logits = [b + x for b, x in zip(m.intercepts, sums, strict=True)]
    task_logits = logits[:-2]
    best = max(range(len(task_logits)), key=task_logits.__getitem__, default=-1)  # first on ties
    rel_cost = math.exp(min(max(logits[-1] - m.cost_ref, -20.0), 20.0))
    task = m.classes[best] if best >= 0 else ""
    return task, _sigmoid(m.score_scale * logits[-2] / rel_cost)


def classify(text: str, *, system: str = "") -> Classification:
    """Classify one rendered prompt with the learned model.

    Same contract as `batchroute.classifier.classify`; `score` (higher = send it stronger) is the
    squashed expected quality gain of the premium tier per relative dollar (see `predict`), and
    `complexity` is the prompt's length bucketed at the model's cut points (the 35th, 70th and
    92nd percentiles of the task-training prompts' lengths).
    """
    m = load_model()
    task, p = predict(text, system=system, model=m)
    # The routing score ranks by gain per dollar, which is not difficulty (its Spearman with
    # WizardLM difficulty is about -0.1); prompt length agrees with difficulty better (0.32).
    n = len(text)
    level = COMPLEXITIES[min(sum(n >= c for c in m.complexity_cuts), len(COMPLEXITIES) - 1)]
    if task not in TASK_TYPES:  # a model file from another version: never route on a stray name
        task = "chat"
    return Classification(task, level, f"learned:{task};score={p:.3f}", p)
