"""Learned router: rendered prompt → task type + per-level quality and cost (issue 12).

Linear models over one set of hashed features: a multinomial logistic regression for the task
type (trained on Auto-J scenario prompts), and for routing, per quality level of
`thresholds.LEVELS` (budget, mid, standard, premium), a ridge regression of the level's
expected quality (RouterBench correctness, arena-bench judge scores) and one of the log of its
*cost factor* (RouterBench: this prompt's call cost over what its length alone predicts, i.e.
mostly how long the answer runs). The plan routes each record to the tier maximising quality −
λ·cost with the job's real prices (`thresholds`). All were fitted by `tools/train_router.py`;
`docs/router-model-card.md` says on what and how well.

Inference is pure Python and deterministic: features are the lower-cased words and word pairs
of the prompt (head and tail, like the heuristic) plus a length bucket, each hashed with CRC-32
(not `hash()`, which is salted per interpreter); a feature counts once however often it occurs.
The model file holds only hashed feature ids and weights, no training text. It is read once,
lazily, from the package (`importlib.resources`); neither scikit-learn nor the training data is
needed here.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from itertools import islice, repeat
from operator import add, le, lshift, methodcaller, xor
from typing import Any, Final
from zlib import crc32

from . import task_head
from .exact_sums import Layout, pack_columns
from .exact_sums import column_ints as _column_ints
from .router_model import MAGIC as MAGIC
from .router_model import MODEL_FILE as MODEL_FILE
from .router_model import Model as Model
from .router_model import parse as _parse
from .shape import structure
from .types import COMPLEXITIES, TASK_TYPES, Classification

HEAD: Final = 1200  # the instruction is nearly always near the start of a prompt...
TAIL: Final = 400  # ...or at its very end
SYSTEM_HEAD: Final = 400
# A token is `[^\W\d_]+|\d+|[^\w\s]`: it starts at a character neither whitespace nor "_" and
# runs on while its kind (letter, digit) does. Written so, `findall` skips to each start by the
# leading set instead of trying three alternatives at every position (half the time in a timing
# at load ~9; the same tokens: test_classify_exact). On lower-cased ASCII text a letter is
# [a-z] (a range test, where `[^\W\d_]` looks up each character's category: about twice as
# fast again).
_TOKEN = re.compile(r"[^\s_](?:(?<=[^\W\d_])[^\W\d_]*|(?<=\d)\d*|)")
_TOKEN_ASCII = re.compile(r"[^\s_](?:(?<=[a-z])[a-z]*|(?<=\d)\d*|)")
_MASK: Final = (1 << 32) - 1
_ENCODE: Final = methodcaller("encode", "utf-8", "surrogatepass")  # C-level, for map()
_MIX: Final = 0x9E3779B1  # an odd 32-bit constant (golden ratio): spreads a pair's id


def features(text: str, *, system: str = "") -> list[int]:
    """The sorted hashed feature ids of a prompt (the same function trains and serves).

    Each distinct token is hashed once with CRC-32; a word pair's id is mixed from its two
    tokens' ids with integer arithmetic (no string join or encode per pair: that is the hot loop).
    """
    return sorted(_feature_set(text, system))


class _TokenIds(dict[str, int]):
    """token → CRC-32 of its UTF-8 (surrogates passed): a memo, so a word seen before costs one
    C-level dict probe instead of an encode and a hash. Bounded by `_remember`."""

    def __missing__(self, tok: str) -> int:
        v = self[tok] = crc32(_ENCODE(tok))
        return v


class _MixedIds(dict[str, int]):
    """token → its id times `_MIX`, masked to 32 bits: the left half of a word pair's id
    (`(a * _MIX ^ b) & _MASK == ((a * _MIX) & _MASK) ^ b` for a 32-bit b)."""

    def __missing__(self, tok: str) -> int:
        v = self[tok] = (_TOKEN_IDS[tok] * _MIX) & _MASK
        return v


_TOKEN_IDS: Final = _TokenIds()
_MIXED_IDS: Final = _MixedIds()
_MEMO_MAX: Final = 1 << 15  # tokens remembered (~8 MB for both memos at most); then afresh
_LEN_IDS: Final = tuple(crc32(b"#len%d" % i) for i in range(17))
_LINES_IDS: Final = tuple(crc32(b"#lines%d" % i) for i in range(6))


def _feature_set(text: str, system: str) -> set[int]:
    """The hashed feature ids of a prompt, unsorted (`features` sorts them): the distinct
    tokens of the lower-cased head and tail window, the word pairs of the window, the system
    prompt's head's tokens prefixed "s:", a length bucket and a line-count bucket."""
    return _feature_parts(text, system)[0]


def _feature_parts(text: str, system: str) -> tuple[set[int], list[str], bool]:
    """`_feature_set`, the window's tokens and whether the window is ASCII."""
    if len(_TOKEN_IDS) > _MEMO_MAX:
        _TOKEN_IDS.clear()
        _MIXED_IDS.clear()
    window = text if len(text) <= HEAD + TAIL else text[:HEAD] + "\n" + text[-TAIL:]
    ascii_window = window.isascii()
    toks = (_TOKEN_ASCII if ascii_window else _TOKEN).findall(window.lower())
    out = _ids_and_pairs(toks)
    if system:
        head = system[:SYSTEM_HEAD]
        s_toks = [
            "s:" + t for t in (_TOKEN_ASCII if head.isascii() else _TOKEN).findall(head.lower())
        ]
        out.update(map(_TOKEN_IDS.__getitem__, s_toks))
    out.add(_LEN_IDS[min(int(math.log2(len(text) + 1)), 16)])
    out.add(_LINES_IDS[min(text.count("\n"), 20) // 4])
    return out, toks, ascii_window


_ID_OF: Final[Callable[[str], Any]] = _TOKEN_IDS.get  # None for a token not seen yet
_LEFT_OF: Final[Callable[[str], Any]] = _MIXED_IDS.get


def _ids_and_pairs(toks: list[str]) -> set[int]:
    """The tokens' ids and their word pairs' ids, as a set, all C-level (a pair's id is
    ((a * _MIX) & _MASK) ^ b for consecutive (a, b)). Through the memos' `get`, a C method `map`
    calls directly, where `__getitem__` builds an argument tuple per call (these lines took a
    third less time, timed at load ~11); when a token is new (a None among the ids, or None ^ id
    raising), again through `__getitem__`, which hashes it and fills the memos."""
    uni: list[Any] = list(map(_ID_OF, toks))
    out: set[Any] = set(uni)
    try:
        out.update(map(xor, map(_LEFT_OF, toks), islice(uni, 1, None)))
    except TypeError:
        out.add(None)
    if None in out:
        uni = list(map(_TOKEN_IDS.__getitem__, toks))
        out = set(uni)
        out.update(map(xor, map(_MIXED_IDS.__getitem__, toks), islice(uni, 1, None)))
    return out


def _ascii_words(toks: list[str]) -> set[str]:
    """The heuristic's words (`[a-z]+` runs) of an ASCII window, from its tokens: there a
    letter token is a maximal run of ASCII letters, lower-cased: exactly one such word (the
    window is the heuristic's too: the same `HEAD` and `TAIL`, see test_classify_exact)."""
    return set(filter(str.isalpha, set(toks)))


def routing_features(text: str, *, system: str = "") -> list[int]:
    """The routing heads' sorted feature ids: `features` and `structure` together."""
    return sorted({*features(text, system=system), *structure(text)})


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


@dataclass(frozen=True, slots=True)
class Prediction:
    """One prompt's predictions: task type, routing score, and per level (cheapest first)
    the expected quality and cost factor."""

    task: str
    score: float
    quality: tuple[float, ...]
    factor: tuple[float, ...]


def predict(text: str, *, system: str = "", model: Model | None = None) -> Prediction:
    """The model's predictions for one prompt.

    The score is a logistic squash of the premium level's predicted quality over the best of
    the two cheapest levels': "how much a strong model is expected to add" (for display and
    ranking; the dial routes on the per-level figures).
    """
    m = model or load_model()
    fast = _fast_for(m)
    if fast is not None:
        return _predict_exact(text, system, m, fast)
    ids = features(text, system=system)
    pred = _predict_ids(sorted({*ids, *structure(text)}), m)
    if pred.task:
        return pred
    # The shipped router file holds the routing heads only (no classes): the task type comes
    # from the task head, stacked on the heuristic's verdict (task_head.py, its own file).
    return replace(pred, task=task_head.predict(ids, text, system=system))


def _predict_ids(ids: list[int], m: Model) -> Prediction:
    """The router file's predictions; `task` is "" when the file has no task columns."""
    # filter/map/zip keep the per-feature work in C: a row is a non-empty tuple (truthy), an
    # absent feature None; each column sums in feature-id order (deterministic)
    present = list(filter(None, map(m.rows.get, ids)))
    sums = [sum(c) for c in zip(*present, strict=True)] or [0.0] * len(m.intercepts)
    return _from_sums(sums, m)


_LOW: Final = repeat(-3.0)  # min(max(z, -3.0), 3.0), as map() arguments (endless: shared)
_HIGH: Final = repeat(3.0)


def _from_sums(sums: list[float], m: Model) -> Prediction:
    """The predictions from each column's sum of the present features' weights."""
    logits = [b + x for b, x in zip(m.intercepts, sums, strict=True)]
    k = m.n_levels
    task_logits = logits[: -2 * k]
    best = max(range(len(task_logits)), key=task_logits.__getitem__, default=-1)  # first on ties
    quality = tuple(logits[-2 * k : -k])
    # a factor is a ratio of costs: clamped to [1/20, 20], the spread seen in training
    factor = tuple(map(math.exp, map(min, map(max, logits[-k:], _LOW), _HIGH)))  # C-level
    score = _sigmoid(m.score_scale * (quality[-1] - max(quality[:2])))
    return Prediction(m.classes[best] if best >= 0 else "", score, quality, factor)


def classify(text: str, *, system: str = "") -> Classification:
    """Classify one rendered prompt with the learned model.

    Same contract as `batchroute.classifier.classify`; `score` (higher = send it stronger) is the
    squashed expected quality gain of the premium level (see `predict`), `tier_quality` and
    `tier_cost` the per-level predictions the cost dial routes on, and
    `complexity` is the prompt's length bucketed at the model's cut points (the 35th, 70th and
    92nd percentiles of the task-training prompts' lengths).
    """
    m = load_model()
    pred = predict(text, system=system, model=m)
    task, p = pred.task, pred.score
    # The routing score is not difficulty (its Spearman with WizardLM difficulty is about 0);
    # prompt length agrees with difficulty better (0.35).
    n = len(text)
    level = COMPLEXITIES[min(sum(map(le, m.complexity_cuts, repeat(n))), len(COMPLEXITIES) - 1)]
    if task not in TASK_TYPES:  # a model file from another version: never route on a stray name
        task = "chat"
    return Classification(
        task, level, f"learned:{task};score={p:.3f}", p, pred.quality, pred.factor
    )


# --- The exact fast path (issue 12: ≥ 5,000 prompts/s on one core) -----------------------------
#
# `_predict_ids` sums each column's float weights in feature-id order, so it must sort the ids
# and walk them twice (the router's rows, then the task head's). When every partial sum of a
# column is exactly representable as a double, no addition rounds and the order is irrelevant:
# the column's weights are then integers times 2^q, and any subset sums exactly as integers. At
# the first prediction `_exact_tables` checks that for every routing column (all weights
# multiples of 2^q_c, the sum of their magnitudes ≤ 2^53 · 2^q_c, so every partial sum of any
# subset is an integer ≤ 2^53 times 2^q_c: a double) and packs each feature's scaled routing
# weights (`exact_sums.pack_columns`), and above them the task head's, into ONE integer. A
# prompt is then one dict probe per feature and one C-level big-integer `sum`, in any order; the
# result is bit-identical to `_predict_ids`. A model that fails the check (or a router file
# with task columns) takes `_predict_ids`, unchanged: slower, never different.


@dataclass(frozen=True, slots=True)
class _Exact:
    """A router model's columns as exact integers, merged with its task head."""

    head: task_head.TaskHead
    packed: dict[int, int]  # feature id → routing weights / 2^q_c (a field each), head above
    router: dict[
        int, int
    ]  # the same without the head: `structure` ids the routing heads alone read
    scales: tuple[int, ...]  # per routing column: q_c (a weight is its integer times 2^q_c)
    guard: int  # the layout's (0: no prompt needs the check), as `test_classify_exact` reads it
    layout: Layout
    logits: task_head.ByteLogits | None  # the head's logits from its part of a prompt's sum


# distinct features a prompt can have: the window's tokens and pairs, the system prompt's head's
# tokens, length and line buckets, the head's own (verdict, lead words)
_MAX_IDS: Final = 2 * (HEAD + TAIL + 1) + SYSTEM_HEAD + 2 + 4


def _build_exact(m: Model) -> _Exact | None:
    if m.classes or not m.rows:
        return None  # task columns in the router file: the reference path decides them
    head = task_head.load()
    cols = [_column_ints(col) for col in zip(*m.rows.values(), strict=True)]
    if any(c is None for c in cols):
        return None
    exact = [c for c in cols if c is not None]
    acc, layout = pack_columns(exact, len(m.rows))
    at = layout.bits
    router = dict(zip(m.rows, acc, strict=True))
    heads = dict(zip(head.packed, map(lshift, head.packed.values(), repeat(at)), strict=True))
    packed = {**router, **heads}
    both = list(router.keys() & heads.keys())  # a feature of both files: both parts, added
    sums = map(add, map(router.__getitem__, both), map(heads.__getitem__, both))
    packed.update(zip(both, sums, strict=True))
    scales = tuple(c[0] for c in exact)
    logits = task_head.ByteLogits.of(head, _MAX_IDS)
    return _Exact(head, packed, router, scales, layout.guard, layout, logits)


_exact: tuple[Model, task_head.TaskHead, _Exact | None] | None = None
_WARM_UP: Final = 1000  # predictions before the tables are built: they cost ~350 prompts' time
_predictions = 0


def _fast_for(m: Model) -> _Exact | None:
    """The exact tables once this process has made `_WARM_UP` predictions (a short `classify`
    or a small job never pays for building them; a long one gets them after ~0.3 s)."""
    global _predictions
    cached = _exact
    if cached is not None and cached[0] is m and (m.classes or cached[1] is task_head.load()):
        return cached[2]
    _predictions += 1
    return _exact_tables(m) if _predictions > _WARM_UP else None


def _exact_tables(m: Model) -> _Exact | None:
    """The exact tables of `m` and the loaded task head, built once (None: not exact)."""
    global _exact
    cached = _exact
    if cached is not None and cached[0] is m and (m.classes or cached[1] is task_head.load()):
        return cached[2]
    with _lock:
        built = _build_exact(m)
        _exact = (m, built.head if built else task_head.load(), built)
    return built


def _predict_exact(text: str, system: str, m: Model, fast: _Exact) -> Prediction:
    """`predict` through the exact tables: bit-identical, without sorting or float sums."""
    ids, toks, ascii_window = _feature_parts(text, system)
    total = sum(filter(None, map(fast.packed.get, ids)))
    # the shape's ids not among the words' (an id counts once, as in the reference's set)
    total += sum(filter(None, map(fast.router.get, [i for i in structure(text) if i not in ids])))
    sums = []
    for q, mask, half, width in fast.layout.fields:  # the routing columns, lowest bits first
        v = total & mask
        if v >= half:
            v -= mask + 1
        sums.append(math.ldexp(v, q))
        total = (total - v) >> width
    if fast.guard:  # the magnitudes' fields (non-negative: no borrow), then the head above
        if total & fast.guard:  # this prompt's sums could round: the reference path's order
            words = features(text, system=system)
            pred = _predict_ids(sorted({*words, *structure(text)}), m)
            return replace(pred, task=task_head.predict(words, text, system=system, head=fast.head))
        total >>= fast.layout.checked
    pred = _from_sums(sums, m)
    h = fast.head
    vocab = _ascii_words(toks) if ascii_window else None  # else the heuristic finds its own
    own = task_head.own_features(text, system=system, head=h, words=vocab)  # rules, lead words
    total += sum(filter(None, map(h.packed.get, own)))
    logits = h.logits_of(total) if fast.logits is None else fast.logits(total)
    return Prediction(h.choose(logits), pred.score, pred.quality, pred.factor)
