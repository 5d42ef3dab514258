"""A `KeyLookup` held in memory, for tests and for a dry run without a database (the store's
`ResumeLookup` is the one a run uses: it holds no key of the job's history)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from batchroute.types import NOT_KNOWN, Known


class MemoryLookup:
    """A `KeyLookup` over keys held in memory: for tests and inputs without a database.

    `final` maps the final keys to their fingerprints; `failed_before` are the final keys that
    failed or were invalid. Duplicates are found by the hashes of the keys seen so far.
    """

    def __init__(
        self, final: Mapping[str, str | None] | None = None, failed_before: Collection[str] = ()
    ) -> None:
        self._final = final or {}
        self._failed = frozenset(failed_before)
        self._seen: set[int] = set()

    def next(self, key: str) -> Known:
        h = hash(key)
        if h in self._seen:
            return Known(duplicate=True)
        self._seen.add(h)
        if key not in self._final:
            return NOT_KNOWN
        return Known(final=True, fp=self._final[key], failed_before=key in self._failed)
