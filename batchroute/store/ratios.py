"""What earlier calls taught about reservations: per model, the largest ratio of a call's
booked cost to its list-price worst case, and the largest cost booked where that was $0
(`runner.cost.Pricer`, seeded at a run's start; docs/design-notes.md, "Learnt cost ratios
outlive the run")."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal, localcontext

import duckdb

from ..types import AttemptRow, CostSource

# Only the calls booked above their list-price worst case teach anything, in one scan. The base
# is `listed_usd` (migration 11): a call reserved at a learnt ratio and billed at it keeps the
# ratio alive, where cost / reservation said 1 and let it lapse after `RATIO_MEMORY_DAYS`
# (money4). Rows written before migration 11 have none: their reservation stands in (what
# they were compared with then). A call booked at its reservation (`reserved`: outcome
# unknown) is no bill, so it teaches nothing. DuckDB's quotient of two DECIMALs is a DOUBLE:
# it picks the row, whose own DECIMALs make the ratio (exact, rounded up). A base of $0 has no
# ratio: the largest cost becomes the model's floor. A native fallback's answer teaches the
# model that served it too, against its own list-price worst case (migration 12,
# `served_listed_usd`, set only when it is one of the call's `models`), as the run's
# `Pricer.answered` does: its bill used to stay on the model asked for at the next start.
_LEARNT = """
SELECT model,
    arg_max([cost_usd, base], cost_usd / base) FILTER (WHERE base > 0),
    max(cost_usd) FILTER (WHERE base = 0)
FROM (SELECT model, cost_usd, {base} AS base FROM attempts
      WHERE started_at >= ? AND cost_source <> 'reserved'{served})
WHERE cost_usd > base
GROUP BY model
"""
_SERVED = """
      UNION ALL
      SELECT served_model, cost_usd, served_listed_usd FROM attempts
      WHERE started_at >= ? AND cost_source <> 'reserved' AND served_listed_usd IS NOT NULL
        AND served_model <> model"""


# A file not migrated yet (a dry run does not migrate it) may predate `served_listed_usd`
# (migration 12: fallbacks teach only the model asked for), `listed_usd` (migration 11: the
# reservation is the base, as then) or `reserved_usd` (migration 4: nothing to learn).
_COLUMNS = """
SELECT column_name FROM duckdb_columns()
WHERE table_name = 'attempts'
    AND column_name IN ('listed_usd', 'reserved_usd', 'served_listed_usd')
"""

PLACES = Decimal("0.001")  # a ratio, rounded up (as `Pricer.learn` rounds one)


def ratio(cost: Decimal, reserved: Decimal) -> Decimal:
    """cost / reserved rounded up to `PLACES`: never under."""
    with localcontext() as ctx:
        ctx.rounding = ROUND_CEILING
        ctx.prec = 60  # $10^15 over $10^-12 is 10^27: room for its 0.001s (28 would raise)
        return (cost / reserved).quantize(PLACES, rounding=ROUND_CEILING)


def learnt(
    con: duckdb.DuckDBPyConnection, since: date
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """Calls started on `since` or later, in every job of the file (a model's bill is the
    model's, whichever job called it): per model, the largest ratio of booked cost to
    list-price worst case above 1 (to the reservation for rows older than migration 11); and
    per model listed at $0 but billed, the largest cost booked."""
    start = datetime(since.year, since.month, since.day)
    above: dict[str, Decimal] = {}
    free: dict[str, Decimal] = {}
    have = {str(c) for (c,) in con.execute(_COLUMNS).fetchall()}
    if "reserved_usd" not in have:
        return above, free
    base = "COALESCE(listed_usd, reserved_usd)" if "listed_usd" in have else "reserved_usd"
    served = "served_listed_usd" in have  # migration 12 (a dry run does not migrate)
    sql = _LEARNT.format(base=base, served=_SERVED if served else "")
    for model, pair, floor in con.execute(sql, [start, start] if served else [start]).fetchall():
        if pair is not None:
            above[str(model)] = ratio(Decimal(pair[0]), Decimal(pair[1]))
        if floor is not None:
            free[str(model)] = Decimal(floor)
    return above, free


Learnt = tuple[dict[str, Decimal], dict[str, Decimal]]  # (ratios, floors) per model


def learnt_from(attempts: Iterable[AttemptRow], since: date, seed: Learnt) -> Learnt:
    """`learnt`'s rule over rows not in the database yet (a killed run's journal that a start
    beside a reader cannot replay: gaps5), merged into `seed` (the largest of each wins)."""
    start = datetime(since.year, since.month, since.day)
    above, free = dict(seed[0]), dict(seed[1])
    reserved = str(CostSource.RESERVED)
    for a in attempts:
        at = a.started_at
        if at.tzinfo is not None:  # (the journal's times are naive UTC; an aware one, moved)
            at = at.astimezone(UTC).replace(tzinfo=None)
        if at < start or str(a.cost_source) == reserved:
            continue
        bases = [(a.model, a.listed_usd if a.listed_usd is not None else a.reserved_usd)]
        if a.served_listed_usd is not None and a.served_model and a.served_model != a.model:
            bases.append((a.served_model, a.served_listed_usd))
        for model, base in bases:
            if base is None or a.cost_usd <= base:
                continue
            into, value = (above, ratio(a.cost_usd, base)) if base > 0 else (free, a.cost_usd)
            into[model] = max(into.get(model, value), value)
    return above, free
