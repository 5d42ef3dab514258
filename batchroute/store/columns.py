"""The columns of `results` and `attempts`, derived from the row dataclasses in `types`.

One place to add a column: a field on `ResultRow`/`AttemptRow` plus a migration. No SQL runs here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from ..types import AttemptRow, ResultRow

MONEY = "DECIMAL(38,12)"  # exact; 12 decimals covers per-token prices (1e-12 USD)


class Column(NamedTuple):
    """A column as the bulk writer sends it: its name and the SQL type it is cast to."""

    name: str
    sql_type: str


def _sql_type(hint: Any) -> str:
    """The SQL type of a field's annotation (`X | None` is X; a StrEnum is text)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if not isinstance(hint, type):
        raise TypeError(f"no SQL type for {hint!r}")
    if issubclass(hint, bool):  # an int to Python, but no encoder path carries it yet
        raise TypeError("no SQL type for bool")
    if issubclass(hint, int):
        return "BIGINT"
    if issubclass(hint, str):  # a StrEnum too: its value is stored
        return "VARCHAR"
    if issubclass(hint, Decimal):
        return MONEY
    if issubclass(hint, datetime):
        return "TIMESTAMP"
    raise TypeError(f"no SQL type for {hint!r}")


def columns_of(row_type: type[Any]) -> tuple[Column, ...]:
    """The columns of a row dataclass, in field order."""
    hints = typing.get_type_hints(row_type)
    return tuple(Column(f.name, _sql_type(hints[f.name])) for f in dataclasses.fields(row_type))


RESULT_COLUMNS = columns_of(ResultRow)
ATTEMPT_COLUMNS = columns_of(AttemptRow)
TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "results": RESULT_COLUMNS,
    "attempts": ATTEMPT_COLUMNS,
}

RESULT_KEY = ("job_name", "record_key")
"""The primary key of `results`: a record has one row, upserted by every write."""
ACCUMULATE = ("cost_usd", "attempts", "escalations")
"""The columns of `results` that add up over the writes of a record."""
ANSWER = (
    "output", "finish_reason", "model_served", "provider", "prompt_tokens",
    "completion_tokens", "generation_id",
)  # fmt: skip
"""The columns of a paid answer: kept when a later row of the record has none (a rerun that
ended pending or failed must not throw away what was paid for)."""
