"""The prompt's shape, as hashed feature ids for the learned router's routing heads (issue 12).

Bags of words miss how a prompt is built: how many blocks it has, and of its last block (the
item a few-shot prompt asks about) how long it is, how many answer options it offers and how
long they are, how many numbers, negations and questions it holds; and `assert` lines (code
tests). Each is a bucketed count hashed with CRC-32 into the same id space as
`learned.features`; chosen by cross-validation on RouterBench train (tools/train_router.py).
Pure: no I/O, no model file.
"""

from __future__ import annotations

import math
import re
from zlib import crc32

_OPTION = re.compile(r"(?m)^\s*\(?([A-Ea-e1-5])[).:]\s+(.*)$")
_NEGATION = re.compile(r"\b(not|except|least|never|false|incorrect|cannot|no)\b", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def structure(text: str) -> list[int]:
    """Hashed ids of the prompt's shape, which bags of words miss (the routing heads only; the
    task head reads `features`): blocks, and of the last block (the item a few-shot prompt asks
    about) its length, answer options and their lengths, numbers, negations, questions; and
    `assert` lines (code tests). Each a bucketed count; chosen by RouterBench-train CV."""
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    last = blocks[-1] if blocks else text
    opts = _OPTION.findall(last)
    out = [
        f"#nblk{min(len(blocks), 6)}",
        f"#lastlen{min(int(math.log2(len(last) + 1)), 14)}",
        f"#nopt{min(len(opts), 6)}",
        f"#nnum{min(len(_NUMBER.findall(last)), 8)}",
        f"#neg{min(len(_NEGATION.findall(last)), 3)}",
        f"#q{min(last.count('?'), 3)}",
        f"#assert{min(text.count('assert'), 5)}",
    ]
    if opts:
        lens = [len(o[1]) for o in opts]
        out.append(f"#optmax{min(int(math.log2(max(lens) + 1)), 8)}")
        out.append(f"#optspread{min(int(math.log2(max(lens) - min(lens) + 1)), 7)}")
    return sorted({crc32(f.encode()) for f in out})
