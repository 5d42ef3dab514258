"""Rendering of a cost and outcome report (`ReportData` from the store) as table, CSV or JSON.

Pure: no I/O and no SQL. Money is printed exactly from Decimal, never through a float.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from .errors import ConfigError
from .store import DIMENSIONS, ReportData, ReportRow

FORMATS = ("table", "csv", "json")
_COLUMNS = (
    "calls",
    "cost_usd",
    "prompt_tokens",
    "completion_tokens",
    "done",
    "failed",
    "invalid",
    "pending",
)
_RELATIVE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(text: str, now: datetime) -> datetime:
    """'7d', '12h', '30m' (relative to `now`) or an ISO date/datetime (UTC) → aware UTC datetime."""
    m = _RELATIVE.match(text)
    if m:
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        try:
            return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except (OverflowError, ValueError):  # before the year 1, or too many digits
            raise ConfigError(
                f"--since {text!r}: that is before the year 1; give a shorter span or a date"
            ) from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected a duration like 7d, 12h, 30m or a date like 2026-11-01"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_by(text: str) -> tuple[str, ...]:
    """'day,tier' → ('day', 'tier'); unknown names raise ConfigError."""
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    for d in dims:
        if d not in DIMENSIONS:
            raise ConfigError(f"--by {d!r}: choose from {', '.join(DIMENSIONS)}")
    return dims


def money(value: Decimal) -> str:
    """Exact fixed-point text of a USD amount, at least two decimals, no trailing zeros beyond."""
    text = format(value.normalize(), "f") if value else "0"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def _cells(row: ReportRow) -> list[str]:
    return [
        str(row.calls),
        money(row.cost_usd),
        str(row.prompt_tokens),
        str(row.completion_tokens),
        str(row.done),
        str(row.failed),
        str(row.invalid),
        str(row.pending),
    ]


def _key_cells(row: ReportRow) -> list[str]:
    return ["(none)" if v is None else v for v in row.key]


def _as_dict(data: ReportData, row: ReportRow) -> dict[str, object]:
    out: dict[str, object] = dict(zip(data.by, row.key, strict=False))  # totals: no key
    out.update(
        calls=row.calls,
        cost_usd=money(row.cost_usd),
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        records={"done": row.done, "failed": row.failed, "invalid": row.invalid,
                 "pending": row.pending},
    )  # fmt: skip
    return out


def _render_json(data: ReportData) -> str:
    doc = {
        "generated_at": data.generated_at.astimezone(UTC).isoformat(),
        "job": data.job_name,
        "since": data.since.astimezone(UTC).isoformat() if data.since else None,
        "by": list(data.by),
        "rows": [_as_dict(data, r) for r in data.rows],
        "totals": _as_dict(data, data.totals),
        "today": {"day": data.today.isoformat(), "cost_usd": money(data.spent_today)},
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def _render_csv(data: ReportData) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*data.by, *_COLUMNS])
    for row in data.rows:
        w.writerow([*_key_cells(row), *_cells(row)])
    if data.by:
        w.writerow([*(["*"] * len(data.by)), *_cells(data.totals)])
    return buf.getvalue()


def _render_table(data: ReportData) -> str:
    header = [*data.by, *_COLUMNS] if data.by else list(_COLUMNS)
    body = [[*_key_cells(r), *_cells(r)] for r in data.rows] if data.by else []
    total = ["TOTAL", *([""] * (len(data.by) - 1)), *_cells(data.totals)] if data.by else []
    lines = [header, *body, total] if total else [header, _cells(data.totals)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    n_keys = len(data.by)

    def fmt(cells: list[str]) -> str:
        parts = [c.ljust(w) if i < n_keys else c.rjust(w) for i, (c, w) in enumerate(
            zip(cells, widths, strict=True))]  # fmt: skip
        return "  ".join(parts).rstrip()

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    out += [fmt(cells) for cells in lines[1:]]
    scope = f"job {data.job_name}" if data.job_name else "whole database"
    since = f" since {data.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if data.since else ""
    out.insert(0, f"batchroute report: {scope}{since}")
    out.append(f"spent today ({data.today.isoformat()} UTC, {scope}): ${money(data.spent_today)}")
    return "\n".join(out) + "\n"


def render(data: ReportData, fmt: str) -> str:
    """Render `data` as 'table', 'csv' or 'json' text."""
    if fmt == "json":
        return _render_json(data)
    if fmt == "csv":
        return _render_csv(data)
    if fmt == "table":
        return _render_table(data)
    raise ConfigError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
