"""The prompt's shape, as hashed feature ids for the learned router's routing heads (issue 12).

Bags of words miss how a prompt is built: how many blocks it has, and of its last block (the
item a few-shot prompt asks about) how long it is, how many answer options it offers and how
long they are, how many numbers, negations and questions it holds; and `assert` lines (code
tests). Each is a bucketed count hashed with CRC-32 into the same id space as
`learned.features`; chosen by cross-validation on RouterBench train (tools/train_router.py).
Pure: no I/O, no model file.

Every bucket is a small finite range, so each feature's CRC-32 ids are computed once at import
(not an f-string, an encode and a hash per prompt), and the negation count of an ASCII block
runs a literal-first regex over its lower-cased copy (no IGNORECASE scan at every position).
`tests/test_classify_exact.py` keeps the plain implementation and compares the two.
"""

from __future__ import annotations

import math
import re
from itertools import islice
from typing import Final
from zlib import crc32

_OPTION = re.compile(r"(?m)^\s*\(?([A-Ea-e1-5])[).:]\s+(.*)$")
_NEGATION = re.compile(r"\b(not|except|least|never|false|incorrect|cannot|no)\b", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# _NEGATION on lower-cased ASCII text, with the same matches (`_by_first_letter`). Only for
# ASCII: IGNORECASE also folds a few non-ASCII letters ("ſ" matches "s").
_NEG_WORDS: Final = ("not", "except", "least", "never", "false", "incorrect", "cannot", "no")


def _by_first_letter(words: tuple[str, ...]) -> re.Pattern[str]:
    """`\b(?:w1|w2|…)\b` on lower-cased ASCII text, written to start with a set of the words'
    first letters, at a word's start only, then the rests of the words with that first letter,
    in their order: `findall` skips to the next such letter, and tries only the words it starts
    (about 3x faster than one alternative per word; the same matches)."""
    rests: dict[str, list[str]] = {}
    for w in words:
        rests.setdefault(w[0], []).append(w[1:])
    first = "".join(rests)
    alts = "|".join(rf"(?<={c})(?:{'|'.join(r)})" for c, r in rests.items())
    return re.compile(rf"[{first}](?<!\w[{first}])(?:{alts})\b")


_NEGATION_ASCII = _by_first_letter(_NEG_WORDS)
_DIGITS: Final = "0123456789"


def _ids(name: str, top: int) -> tuple[int, ...]:
    """CRC-32 of "#{name}{i}" for each bucket i in 0..top (what an f-string per prompt gave)."""
    return tuple(crc32(f"#{name}{i}".encode()) for i in range(top + 1))


_NBLK: Final = _ids("nblk", 6)
_LASTLEN: Final = _ids("lastlen", 14)
_NOPT: Final = _ids("nopt", 6)
_NNUM: Final = _ids("nnum", 8)
_NEG: Final = _ids("neg", 3)
_Q: Final = _ids("q", 3)
_ASSERT: Final = _ids("assert", 5)
_OPTMAX: Final = _ids("optmax", 8)
_OPTSPREAD: Final = _ids("optspread", 7)


def _numbers(block: str) -> int:
    """len(_NUMBER.findall(block)): an ASCII block without an ASCII digit has none (`\\d` also
    matches other scripts' digits, so any other block is searched)."""
    if block.isascii() and not any(map(block.__contains__, _DIGITS)):
        return 0
    return len(_NUMBER.findall(block))


def _negations(block: str) -> int:
    """len(_NEGATION.findall(block))."""
    if block.isascii():
        return len(_NEGATION_ASCII.findall(block.lower()))
    return len(_NEGATION.findall(block))


def structure(text: str) -> list[int]:
    """Hashed ids of the prompt's shape, which bags of words miss (the routing heads only; the
    task head reads `features`): blocks, and of the last block (the item a few-shot prompt asks
    about) its length, answer options and their lengths, numbers, negations, questions; and
    `assert` lines (code tests). Each a bucketed count; chosen by RouterBench-train CV."""
    stripped = text.strip()
    if "\n\n" in stripped:
        pieces = stripped.split("\n\n")
        # the stripped text ends in a non-space: its last piece is the last non-blank block
        last = pieces[-1]
        nblk = len(list(islice(filter(str.strip, pieces), 6)))  # the non-blank ones, up to 6
    else:  # one block (or none: then the text itself, as blank as it is, is the last block)
        last = stripped or text
        nblk = 1 if stripped else 0
    opts = _OPTION.findall(last)
    out = {
        _NBLK[min(nblk, 6)],
        _LASTLEN[min(int(math.log2(len(last) + 1)), 14)],
        _NOPT[min(len(opts), 6)],
        _NNUM[min(_numbers(last), 8)],
        _NEG[min(_negations(last), 3)],
        _Q[min(last.count("?"), 3)],
        _ASSERT[min(text.count("assert"), 5)],
    }
    if opts:
        lens = [len(o[1]) for o in opts]
        out.add(_OPTMAX[min(int(math.log2(max(lens) + 1)), 8)])
        out.add(_OPTSPREAD[min(int(math.log2(max(lens) - min(lens) + 1)), 7)])
    return sorted(out)
