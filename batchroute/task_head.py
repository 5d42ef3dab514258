"""The learned router's task-type head: a linear model stacked on the heuristic's rule verdict.

A multinomial logistic regression (fitted by `tools/train_task_head.py`) over the learned
router's hashed word and word-pair features (`learned.features`, computed once per prompt and
shared with the routing score) plus two features from the heuristic classifier: the task type
it chose and the rule that fired (`#ht:<task>`, `#hr:<rule>`). The rules carry what Auto-J's
long real requests cannot teach (short canonical instructions, code, foreign text); the words
correct the rules where the training data disagrees with them. A file may also ask for
character n-grams of the prompt's head (`char_features`, header `meta.char`); the shipped one
does not (better on Auto-J cross-validation, worse on prompt sets unlike it: see the card).
See docs/router-model-card.md.

Inference is pure Python and exact: each feature's weights are quantized to 16-bit integers at
training time and packed into one Python integer, 32 bits per class, so a prompt's class logits
are one `sum` of its present features' integers (C-level big-int additions instead of a Python
loop over classes), decoded at the end. Integer arithmetic makes the argmax the same on every
platform. The file holds hashed feature ids and integer weights, no training text.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import threading
from array import array
from dataclasses import dataclass
from importlib import resources
from itertools import repeat
from operator import add, lshift, methodcaller
from typing import Final
from zlib import crc32

from . import classifier

MODEL_FILE: Final = "data/task_model.bin"
MAGIC: Final = b"BRTH1\n"
FIELD: Final = 32  # bits per class in a packed integer: 16-bit weights, room for 2^16 features
_FIELD_MASK: Final = (1 << FIELD) - 1
_SIGN: Final = 1 << (FIELD - 1)
_ENCODE: Final = methodcaller("encode", "utf-8", "surrogatepass")  # C-level, for map()


def heuristic_features(text: str, *, system: str = "", words: set[str] | None = None) -> list[int]:
    """The stacked features: the heuristic's task type and the rule that decided it (`words`:
    see `classifier.rule_verdict`)."""
    verdict = classifier.rule_verdict(text, system=system, words=words)
    ids = _VERDICT_IDS.get(verdict)
    if ids is None:  # a few dozen (task, rule) pairs exist: hash each once per process
        task, rule = verdict
        ids = _VERDICT_IDS[verdict] = (
            crc32(b"#ht:" + task.encode()),
            crc32(b"#hr:" + rule.encode()),
        )
    return list(ids)


_VERDICT_IDS: dict[tuple[str, str], tuple[int, int]] = {}


_LEAD_WORD = re.compile(r"[^\W\d_]+")


def lead_features(text: str) -> list[int]:
    """The instruction's first word and first two words ("#v1:write", "#v2:write a"): the
    leading verb says the task more reliably than the same word further in."""
    words = tuple(_LEAD_WORD.findall(text[:80].lower(), 0)[:2])
    ids = _LEAD_IDS.get(words)
    if ids is None:  # hashed once per process for each (first word, second word)
        if len(_LEAD_IDS) > _LEAD_MAX:
            _LEAD_IDS.clear()
        ids = _LEAD_IDS[words] = _lead_ids(words)
    return list(ids)


def _lead_ids(words: tuple[str, ...]) -> tuple[int, ...]:
    if not words:
        return ()
    first = crc32(("#v1:" + words[0]).encode("utf-8", "surrogatepass"))
    if len(words) == 1:
        return (first,)
    return first, crc32(("#v2:" + " ".join(words)).encode("utf-8", "surrogatepass"))


_LEAD_IDS: dict[tuple[str, ...], tuple[int, ...]] = {}
_LEAD_MAX: Final = 1 << 14  # lead word pairs remembered; then afresh


CHAR_HEAD: Final = 60  # default: characters of the prompt the character n-grams come from
_CHAR_SEED: Final = crc32(b"#c:")  # crc32(gram, seed) == crc32(b"#c:" + gram): no concat


def char_features(text: str, head: int = CHAR_HEAD) -> list[int]:
    """Character 3- and 4-grams of the prompt's first `head` characters, lower-cased with
    whitespace runs folded to one space ("#c:summ"): word stems and inflections ("summar",
    "translat", "classif") and non-Latin scripts, which whole words spread over many rare ids.
    """
    s = " " + " ".join(text[:head].lower().split()) + " "
    # zip + join keep the per-gram work in C (a slicing comprehension is ~1.4x slower)
    grams = set(map("".join, zip(s, s[1:], s[2:], strict=False)))
    grams.update(map("".join, zip(s, s[1:], s[2:], s[3:], strict=False)))
    return list(map(crc32, map(_ENCODE, grams), repeat(_CHAR_SEED)))


def pack(weights: list[int]) -> int:
    """One integer holding a feature's per-class weights (signed, |w| < 2^15), 32 bits each."""
    if any(not -(1 << 15) < w < (1 << 15) for w in weights):
        raise ValueError(f"{MODEL_FILE}: a weight does not fit 16 bits")
    return sum(w << (FIELD * j) for j, w in enumerate(weights))


def _pack_rows(weights: array[int], k: int) -> list[int]:
    """`pack` of each row of k weights (row i is weights[i*k : (i+1)*k]), by columns: each
    column shifted into place and added with C-level maps instead of a Python call per row."""
    if weights and min(weights) <= -(1 << 15):  # `pack`'s check (an int16 is never above)
        raise ValueError(f"{MODEL_FILE}: a weight does not fit 16 bits")
    n = len(weights) // k if k else 0
    acc: list[int] = [0] * n
    for j in range(k):
        acc = list(map(add, acc, map(lshift, weights[j::k], repeat(FIELD * j))))
    return acc


def unpack(total: int, k: int) -> list[int]:
    """The k signed per-class sums of a sum of packed integers (the inverse of `pack`'s sum)."""
    out = []
    for _ in range(k):
        v = total & _FIELD_MASK
        if v >= _SIGN:
            v -= 1 << FIELD
        out.append(v)
        total = (total - v) >> FIELD
    return out


@dataclass(frozen=True, slots=True)
class TaskHead:
    """Classes, integer intercepts and packed integer weights by hashed feature id."""

    classes: tuple[str, ...]
    intercepts: tuple[int, ...]
    packed: dict[int, int]
    meta: dict[str, object]
    lead: bool = False  # the head was trained with `lead_features` too
    stacked: bool = True  # ... and with `heuristic_features` (the rules' verdict)
    char: int = 0  # ... and with `char_features` of the first `char` characters (0: without)

    def logits(self, ids: list[int]) -> list[int]:
        """Integer class logits (scaled by the file's quantization step) for feature ids."""
        # most ids are not in the head: drop the misses before the big-integer additions
        total = sum(filter(None, map(self.packed.get, ids)))  # C-level: no Python per feature
        return self.logits_of(total)

    def logits_of(self, total: int) -> list[int]:
        """Integer class logits from the sum of the present features' packed integers."""
        sums = unpack(total, len(self.classes))
        return [b + s for b, s in zip(self.intercepts, sums, strict=True)]

    def predict(self, ids: list[int]) -> str:
        """The task type with the highest logit (the first one on a tie)."""
        return self.choose(self.logits(ids))

    def choose(self, lg: list[int]) -> str:
        """The class with the highest of these logits (the first one on a tie)."""
        return self.classes[max(range(len(lg)), key=lg.__getitem__)]


@dataclass(frozen=True, slots=True)
class ByteLogits:
    """`TaskHead.logits_of` in C: a head's k class sums, each |s| < 2^31, plus `bias` (2^31 in
    each field) make every field its sum + 2^31 with no borrow between fields, so the integer's
    little-endian bytes are the k unsigned fields (`fields`), less 2^31, plus the intercepts."""

    bias: int
    fields: struct.Struct
    offsets: tuple[int, ...]  # per class: its intercept − 2^31

    @classmethod
    def of(cls, head: TaskHead, max_ids: int) -> ByteLogits | None:
        """The decoder of `head`'s sums over at most `max_ids` features (and its character
        n-grams); None if such sums could leave their field (int16 weights: 2^15 each)."""
        sign = 1 << (FIELD - 1)
        if (max_ids + 2 * head.char) << 15 >= sign:
            return None
        k = len(head.classes)
        bias = sum(sign << (FIELD * j) for j in range(k))
        offsets = tuple(b - sign for b in head.intercepts)
        return cls(bias, struct.Struct(f"<{k}I"), offsets)

    def __call__(self, total: int) -> list[int]:
        raw = (total + self.bias).to_bytes(self.fields.size, "little")
        return list(map(add, self.fields.unpack(raw), self.offsets))


def parse(blob: bytes) -> TaskHead:
    """Read a task-head file: MAGIC, a JSON header's length and text, uint32 ids, int16 weights."""
    if not blob.startswith(MAGIC):
        raise ValueError(f"{MODEL_FILE}: not a batchroute task-head model")
    pos = len(MAGIC)
    try:
        (hlen,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        header = json.loads(blob[pos : pos + hlen])
        n, classes = int(header["n_features"]), tuple(str(c) for c in header["classes"])
        intercepts = tuple(int(b) for b in header["intercepts"])
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{MODEL_FILE}: damaged header ({exc})") from exc
    pos += hlen
    k = len(classes)
    if len(intercepts) != k or len(blob) != pos + 4 * n + 2 * n * k:
        raise ValueError(f"{MODEL_FILE}: truncated or damaged ({len(blob)} bytes)")
    ids = array("I")
    ids.frombytes(blob[pos : pos + 4 * n])
    weights = array("h")
    weights.frombytes(blob[pos + 4 * n :])
    if sys.byteorder == "big":
        ids.byteswap()
        weights.byteswap()
    packed = dict(zip(ids, _pack_rows(weights, k), strict=True))
    meta = header.get("meta", {})
    lead, stacked = bool(meta.get("lead", False)), bool(meta.get("stacked", True))
    return TaskHead(classes, intercepts, packed, meta, lead, stacked, int(meta.get("char", 0)))


_head: TaskHead | None = None
_lock = threading.Lock()


def load() -> TaskHead:
    """The shipped task head, read once (thread-safe)."""
    global _head
    if _head is None:
        with _lock:
            if _head is None:
                _head = parse(resources.files("batchroute").joinpath(MODEL_FILE).read_bytes())
    return _head


def predict(ids: list[int], text: str, *, system: str = "", head: TaskHead | None = None) -> str:
    """Task type of a prompt, given its `learned.features` ids (computed once by the caller)."""
    h = head or load()
    return h.predict([*ids, *own_features(text, system=system, head=h)])


def own_features(
    text: str, *, system: str = "", head: TaskHead, words: set[str] | None = None
) -> list[int]:
    """The head's features beyond `learned.features`: the heuristic's verdict if it was trained
    stacked, the lead words if it was trained with them, character n-grams if it asks for them.
    `words`: the heuristic's window's words, if the caller has them (`classifier.rule_verdict`).
    """
    heur = heuristic_features(text, system=system, words=words) if head.stacked else []
    lead = lead_features(text) if head.lead else []
    return [*heur, *lead, *(char_features(text, head.char) if head.char else [])]
