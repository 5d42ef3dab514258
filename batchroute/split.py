"""How records split over the tiers: the sample the cost dial calibrates on, and the
experiment arms. Pure and synchronous; stdlib only.

- `DialSample` holds a bounded, order-free sample of an input of any size: the `SAMPLE_MAX`
  records whose keys hash lowest (blake2b of the key), a bottom-k sketch. An input of at most
  `SAMPLE_MAX` records is held whole, so the dial is calibrated on every record; a larger one
  on a uniform sample that does not depend on the order of the lines or on how far an earlier
  run got (a 10M-line input costs the same memory as a 10,000-line one). The dial's λ is
  calibrated on the sample; every record is then routed with its own predictions.
- `in_experiment` is a pure function of (seed, record key): the same seed gives the same
  arms in every run and every resume, whatever order or subset of the input a run sees.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Final, Generic, TypeVar

SAMPLE_MAX: Final = 10_000  # the most records the dial calibrates on (a uniform sample beyond)
CONTROL: Final = "control"
T = TypeVar("T")


class DialSample(Generic[T]):
    """The `limit` items whose keys hash lowest, of all the items added (any order)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = SAMPLE_MAX if limit is None else limit
        self._heap: list[tuple[int, str, int, T]] = []  # (-hash, key, seq, item): a max-heap
        self.count = 0

    def add(self, key: str, item: T) -> None:
        """Offer one record's item; it is kept if its key is among the `limit` lowest."""
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        self.count += 1
        entry = (-h, key, self.count, item)  # seq: a repeated key never compares the items
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:  # a lower hash than the highest kept one
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[T]:
        """The kept items, by key hash (the same list whatever order they were added in)."""
        return [e[3] for e in sorted(self._heap, key=lambda e: (-e[0], e[1]))]


def _unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key): blake2b, stable across Python versions."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_experiment(seed: int, key: str, share: float) -> bool:
    """Whether the record with `key` is in the experiment's arm (about `share` of records)."""
    return _unit(seed, key) < share


def arm_name(tier_shift: int) -> str:
    """The label of the experiment arm in `results.arm`, e.g. "shift+1" or "shift-1"."""
    return f"shift{tier_shift:+d}"


def shifted(index: int, tier_shift: int, n_tiers: int) -> int:
    """The tier index `tier_shift` tiers away, clamped to the cheapest and the dearest tier."""
    return min(max(index + tier_shift, 0), n_tiers - 1)
