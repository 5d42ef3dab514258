"""Exact integer sums of float32 weight columns (the learned router's fast path, issue 12).

A column whose every partial sum over any subset of its weights is exactly a double can be
summed in any order as integers (weights / 2^q) and give the float sum bit for bit. Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from itertools import repeat
from operator import add, lshift, or_, rshift
from typing import Final

WIDTH: Final = 80  # bits per routing column: a column's summed magnitudes are below 2^79
FIELD: Final = (1 << WIDTH) - 1
HALF: Final = 1 << (WIDTH - 1)
EXACT: Final = 1 << 53  # every integer of at most this magnitude is a double


def column_ints(col: tuple[float, ...]) -> tuple[int, list[int], int | None] | None:
    """(q, the weights / 2^q as integers, None) if every partial sum of any subset of `col` is
    exactly a double (then the order of the additions cannot matter); (q, integers, b) if that
    holds only for subsets whose integers' magnitudes sum below 2^b (a prompt's check); None if
    the integers are too wide to pack (then only the reference path's order gives its result)."""
    nz = list(filter(None, col))
    if not nz:
        return 0, [0] * len(col), None
    # a float32 weight with frexp exponent e is a multiple of 2^(e - 24): scale by the smallest
    lo = math.frexp(min(map(abs, nz)))[1] - 24
    if math.frexp(max(map(abs, nz)))[1] - lo > 900:  # inf, nan, or beyond a double once scaled
        return None
    scaled = list(map(math.ldexp, col, repeat(-lo)))  # exact: a power-of-two scale
    if not all(map(float.is_integer, scaled)):
        return None  # not float32 weights: leave them to the reference path
    ints = list(map(int, scaled))
    low = reduce(or_, ints)  # its lowest set bit is every weight's lowest (two's complement)
    t = (low & -low).bit_length() - 1  # all weights are multiples of 2^(lo + t), so is any sum
    # a partial sum m · 2^(lo + t) with |m| ≤ 2^53 is a double
    total = sum(map(abs, ints))
    if total <= EXACT << t:
        return lo, ints, None  # any subset: every partial sum is exact
    if total >> t >= HALF:
        return None  # a sum could overflow its field
    return lo + t, list(map(rshift, ints, repeat(t))), 53  # exact: multiples of 2^t


Column = tuple[int, list[int], "int | None"]  # column_ints' answer: (q, integers, limit)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each column's integer sits in a packed integer, lowest bits first."""

    # per column: (q, its field's mask, half, width); a field is as wide as the column's
    # summed magnitudes and a sign bit: no subset's sum can overflow it
    fields: tuple[tuple[int, int, int, int], ...]
    # 0, or: the magnitudes of the columns exact only for small subsets are packed above the
    # weights, and a sum whose magnitudes have a bit of `guard` set could round
    guard: int
    checked: int  # bits of the magnitudes' fields, just above the columns
    bits: int  # all of them: what lies above (the task head) is shifted by this


def pack_columns(cols: list[Column], n: int) -> tuple[list[int], Layout]:
    """Each of the n rows' column integers packed into one integer (see `Layout`): any subset
    of rows sums to one integer from which every column's exact sum is read back."""
    widths = [sum(map(abs, c[1])).bit_length() + 1 for c in cols]
    fields = [c[1] for c in cols]
    guard, checked = 0, 0
    for c in cols:  # the magnitudes of the columns exact only for small subsets, above
        if c[2] is not None:
            mags = list(map(abs, c[1]))
            width = max(sum(mags).bit_length(), c[2])  # non-negative sums: no sign bit
            fields.append(mags)
            widths.append(width)
            guard |= (((1 << width) - 1) ^ ((1 << c[2]) - 1)) << checked  # bits b .. width
            checked += width
    acc: list[int] = [0] * n
    at = 0
    for ints, width in zip(fields, widths, strict=True):
        acc = list(map(add, acc, map(lshift, ints, repeat(at))))
        at += width
    layout = tuple(
        (c[0], (1 << w) - 1, 1 << (w - 1), w) for c, w in zip(cols, widths, strict=False)
    )
    return acc, Layout(layout, guard, checked, at)
