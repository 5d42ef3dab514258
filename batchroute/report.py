"""Rendering of a cost and outcome report (`ReportData` from the store) as table, markdown, CSV
or JSON; the HTML report is `report_html`.

Pure: no I/O and no SQL. Money is never a float: JSON and CSV carry the exact amount
(`usd.exact`), tables print it through `usd.amount`, the one formatter of every money text.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from .errors import ConfigError
from .store import DIMENSIONS, ReportData, ReportRow
from .usd import amount, exact, usd

FORMATS = ("table", "csv", "json", "markdown")
_COLUMNS = (
    "calls", "cost_usd", "retried", "fell_back", "escalated", "prompt_tokens",
    "completion_tokens", "done", "failed", "invalid", "pending", "saved_usd",
    "reserved_calls", "reserved_usd",
)  # fmt: skip
_FAILURE_LEFT = (0, 4, 5)  # error_type, models, sample_message: text, not numbers
_RECORD_FAILURE_LEFT = (0, 1, 3)  # error_type, status, sample_message
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
    """Exact fixed-point text of a USD amount (kept for callers of the old name)."""
    return exact(value)


def rate(part: int, whole: int) -> float:
    """part/whole as a fraction (0.0 when there is no whole)."""
    return part / whole if whole else 0.0


def pct(fraction: float | Decimal) -> str:
    """A fraction as '6.2 %', the one way rates are printed."""
    return f"{float(fraction) * 100:.1f} %"


def saved_pct(row: ReportRow) -> Decimal | None:
    """Routing's saving as a percentage of the top model's price (None: nothing priced)."""
    if not row.baseline_usd:
        return None
    return (row.saved_usd * 100 / row.baseline_usd).quantize(Decimal("0.1"))


def savings_line(data: ReportData) -> str:
    """'routing saved $X (Y %) against M on N records …': one sentence for every format."""
    t = data.totals
    unpriced = t.done + t.failed + t.invalid + t.pending - t.priced
    if not t.priced:
        return "routing savings: no record has both tokens and a top-tier price to compare with"
    share = pct(abs(t.saved_usd) / t.baseline_usd) if t.baseline_usd else "n/a"  # a free yardstick
    against = ", ".join(data.baseline_models) or "the top tier's first model"
    # The yardstick need not be the dearest model (a top tier of o3 under a tier of Claude):
    # then routing cost more, said as such, never as a negative saving.
    head = (
        f"routing saved {usd(t.saved_usd)} ({share}) against {against}"
        if t.saved_usd >= 0
        else f"routing cost {usd(-t.saved_usd)} ({share}) more than {against} would have"
    )
    return (
        f"{head} at catalogue prices: {usd(t.priced_cost_usd)} spent on {t.priced} "
        f"records that would have cost {usd(t.baseline_usd)}"
        + (f" ({unpriced} records without tokens not compared)" if unpriced else "")
    )


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def reserved_line(data: ReportData) -> str | None:
    """How much of the total is booked at a reservation, not a bill (None: nothing is)."""
    t = data.totals
    if not t.reserved_calls:
        return None
    line = (
        f"of which {usd(t.reserved_usd)} ({_calls(t.reserved_calls)}) is booked at its "
        "reservation, not yet confirmed by OpenRouter"
    )
    no_id = t.reserved_calls - data.reserved_with_id
    if data.reserved_with_id:
        line += f": the next run asks /generation again for {_calls(data.reserved_with_id)}"
    if no_id:
        verbs = ("has", "stays", "its") if no_id == 1 else ("have", "stay", "their")
        line += (
            f"{';' if data.reserved_with_id else ':'} {_calls(no_id)} {verbs[0]} no generation "
            f"id and {verbs[1]} booked at {verbs[2]} reservation (an overcount, never an "
            "undercount)"
        )
    return line


def _cells(row: ReportRow, money_text: Any = amount) -> list[str]:
    return [
        str(row.calls), money_text(row.cost_usd), str(row.retried), str(row.fell_back),
        str(row.escalated), str(row.prompt_tokens), str(row.completion_tokens), str(row.done),
        str(row.failed), str(row.invalid), str(row.pending), money_text(row.saved_usd),
        str(row.reserved_calls), money_text(row.reserved_usd),
    ]  # fmt: skip


def _key_cells(row: ReportRow) -> list[str]:
    return ["(none)" if v is None else v for v in row.key]


def _as_dict(data: ReportData, row: ReportRow) -> dict[str, object]:
    out: dict[str, object] = dict(zip(data.columns, row.key, strict=False))  # totals: no key
    out.update(
        calls=row.calls,
        cost_usd=exact(row.cost_usd),
        calls_by_outcome={"retried": row.retried, "fell_back": row.fell_back,
                          "escalated": row.escalated},
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        records={"done": row.done, "failed": row.failed, "invalid": row.invalid,
                 "pending": row.pending},
        savings={"priced_records": row.priced, "baseline_usd": exact(row.baseline_usd),
                 "cost_usd": exact(row.priced_cost_usd), "saved_usd": exact(row.saved_usd),
                 "saved_pct": str(p) if (p := saved_pct(row)) is not None else None},
        reserved={"calls": row.reserved_calls, "cost_usd": exact(row.reserved_usd)},
    )  # fmt: skip
    return out


def _rates(t: ReportRow) -> dict[str, float]:
    return {
        "retry_rate": rate(t.retried, t.calls),
        "fallback_rate": rate(t.fell_back, t.calls),
        "escalation_rate": rate(t.escalated, t.calls),
    }


def _render_json(data: ReportData) -> str:
    doc = {
        "generated_at": data.generated_at.astimezone(UTC).isoformat(),
        "job": data.job_name,
        "since": data.since.astimezone(UTC).isoformat() if data.since else None,
        "by": list(data.by),
        "columns": list(data.columns),
        "rows": [_as_dict(data, r) for r in data.rows],
        "totals": _as_dict(data, data.totals),
        "rates": _rates(data.totals),
        "reserved": {"calls": data.totals.reserved_calls,
                     "cost_usd": exact(data.totals.reserved_usd),
                     "with_generation_id": data.reserved_with_id, "line": reserved_line(data)},
        "savings": {**_as_dict(data, data.totals)["savings"],  # type: ignore[dict-item]
                    "baseline_models": list(data.baseline_models),
                    "line": savings_line(data)},
        "failures": [{"error_type": f.error_type, "calls": f.calls, "records": f.records,
                      "models": f.models, "sample_message": f.sample_message,
                      "cost_usd": exact(f.cost_usd)} for f in data.failures],
        "failed_records": [{"error_type": f.error_type, "status": f.status,
                            "records": f.records, "sample_message": f.sample_message}
                           for f in data.record_failures],
        "latency_ms": [{"model": x.model, "calls": x.calls, "p50": x.p50_ms, "p95": x.p95_ms,
                        "p99": x.p99_ms} for x in data.latency],
        "today": {"day": data.today.isoformat(), "cost_usd": exact(data.spent_today),
                  "batches_out_usd": exact(data.batches_out)},
    }  # fmt: skip
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def _render_csv(data: ReportData) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*data.columns, *_COLUMNS])
    for row in data.rows:
        w.writerow([*_key_cells(row), *_cells(row, exact)])
    if data.by:
        w.writerow([*(["*"] * len(data.columns)), *_cells(data.totals, exact)])
    return buf.getvalue()


def _grid(data: ReportData) -> tuple[list[str], list[list[str]], int]:
    """Header, body (with the total row) and number of key columns of the breakdown."""
    n = len(data.columns)
    header = [*data.columns, *_COLUMNS]
    body = [[*_key_cells(r), *_cells(r)] for r in data.rows]
    total = ["TOTAL", *([""] * (n - 1)), *_cells(data.totals)] if n else _cells(data.totals)
    return header, [*body, total], n


def _aligned(header: list[str], body: list[list[str]], left: Collection[int]) -> list[str]:
    lines = [header, *body]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        parts = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(
            zip(cells, widths, strict=True))]  # fmt: skip
        return "  ".join(parts).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(c) for c in body)]


def _md(header: list[str], body: list[list[str]], left: Collection[int]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rule = ["---" if i in left else "---:" for i in range(len(header))]
    return ["| " + " | ".join(cell(c) for c in line) + " |" for line in (header, rule, *body)]


def _summary(data: ReportData) -> list[str]:
    t = data.totals
    r = _rates(t)
    reserved = reserved_line(data)
    return [
        f"records: {t.done} done, {t.failed} failed, {t.invalid} invalid, {t.pending} pending",
        f"calls: {t.calls} costing {usd(t.cost_usd)}; retry rate {pct(r['retry_rate'])}, "
        f"fallback rate {pct(r['fallback_rate'])}, escalation rate {pct(r['escalation_rate'])}",
        *([reserved] if reserved else []),
        savings_line(data),
    ]


def _failure_grid(data: ReportData) -> tuple[list[str], list[list[str]]]:
    header = ["error_type", "calls", "records", "cost_usd", "models", "sample_message"]
    body = [
        [f.error_type, str(f.calls), str(f.records), amount(f.cost_usd), f.models,
         " ".join((f.sample_message or "").split())[:120]]
        for f in data.failures
    ]  # fmt: skip
    return header, body


def _record_failure_grid(data: ReportData) -> tuple[list[str], list[list[str]]]:
    header = ["error_type", "status", "records", "sample_message"]
    body = [
        [f.error_type, f.status, str(f.records), " ".join((f.sample_message or "").split())[:120]]
        for f in data.record_failures
    ]
    return header, body


def _title(data: ReportData) -> tuple[str, str]:
    scope = f"job {data.job_name}" if data.job_name else "whole database"
    since = f" since {data.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if data.since else ""
    return scope, f"batchroute report: {scope}{since}"


def _render_table(data: ReportData) -> str:
    scope, title = _title(data)
    header, body, n = _grid(data)
    out = [title, *_aligned(header, body, range(n)), "", *_summary(data)]
    if data.failures:
        f_header, f_body = _failure_grid(data)
        out += ["", "failed calls by error type:", *_aligned(f_header, f_body, _FAILURE_LEFT)]
    if data.record_failures:
        r_header, r_body = _record_failure_grid(data)
        out += ["", "failed and invalid records by error type:",
                *_aligned(r_header, r_body, _RECORD_FAILURE_LEFT)]  # fmt: skip
    out.append(_today("spent today", data, scope))
    return "\n".join(out) + "\n"


def _render_markdown(data: ReportData) -> str:
    scope, title = _title(data)
    header, body, n = _grid(data)
    out = [f"# {title}", "", *_md(header, body, range(n)), "", *(f"- {s}" for s in _summary(data))]
    if data.failures:
        f_header, f_body = _failure_grid(data)
        out += ["", "## Failed calls by error type", "", *_md(f_header, f_body, _FAILURE_LEFT)]
    if data.record_failures:
        r_header, r_body = _record_failure_grid(data)
        out += ["", "## Failed and invalid records by error type", "",
                *_md(r_header, r_body, _RECORD_FAILURE_LEFT)]  # fmt: skip
    out += ["", _today("Spent today", data, scope)]
    return "\n".join(out) + "\n"


def render(data: ReportData, fmt: str) -> str:
    """Render `data` as 'table', 'markdown', 'csv' or 'json' text."""
    renderers = {
        "json": _render_json,
        "csv": _render_csv,
        "table": _render_table,
        "markdown": _render_markdown,
    }
    if fmt not in renderers:
        raise ConfigError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    return renderers[fmt](data)


def _today(label: str, data: ReportData, scope: str) -> str:
    """Today's spend, and what of it is batches still out (committed, not collected yet)."""
    line = f"{label} ({data.today.isoformat()} UTC, {scope}): {usd(data.spent_today)}"
    if data.batches_out:
        line += f", of which {usd(data.batches_out)} reserved by batches still out"
    return line
