"""The HTML report: one self-contained file (no script, no network), charts drawn here as inline
SVG with a viewBox, so they scale from a phone to a wide screen.

Pure (but for `check_target`, which reads a file's first bytes): `ReportData` in, text out.
Every value from the database (model, tier and task names, error messages) is untrusted and goes
through `_e` (html.escape) before it reaches the page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from pathlib import Path

from .errors import ConfigError
from .lock import real_db_path
from .report import pct, rate, reserved_line, savings_line
from .store import ReportData, ReportRow
from .usd import usd


def check_target(page: Path, db: Path) -> None:
    """Refuse to write the page over data: the database `db`, a file a run keeps beside it
    (`.journal*`, `.wal`, `.lock`), or any existing file that is not an HTML page (another
    database, the job's input, its job file). `report db --html db` (a slip of the shell's
    history) once replaced a job's every result and cost (audit6); an earlier page is
    written over, as asked."""
    target, here = real_db_path(page), real_db_path(db)
    beside = target.parent == here.parent and target.name.startswith(here.name + ".")
    if target == here or beside or (page.exists() and not _a_page(page)):
        raise ConfigError(
            f"--html {page}: that file holds data (a database, a run's file beside one, or "
            "not an HTML page); name a new file for the page (e.g. report.html)"
        )


def _a_page(path: Path) -> bool:
    """An empty file or an HTML page (what `--html` writes); not a directory, not data."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64).lstrip().lower()
    except OSError:
        return False
    return not head or head.startswith((b"<!doctype html", b"<html"))


HTML_PARTS: tuple[tuple[str, ...], ...] = (("day", "tier"), ("model",), ("tier",))
"""The groupings `render_html` takes, in its argument order."""

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
            "#9c755f", "#bab0ac", "#e15759")  # fmt: skip
_OUTCOMES = (("done", "#59a14f"), ("failed", "#e15759"), ("invalid", "#edc948"),
             ("pending", "#bab0ac"))  # fmt: skip
_W = 480  # every chart's viewBox width (small: text stays legible when a phone shrinks it)
_CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
  background: #f5f7fa; }
body { margin: 0 auto; max-width: 1200px; padding: 16px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; } h2 { font-size: 1.1rem; margin: 0 0 8px; }
.sub { color: #52606d; margin: 0 0 16px; font-size: .9rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px;
  margin-bottom: 16px; }
section + section { margin-top: 16px; }
.card, figure, section { background: #fff; border-radius: 8px; padding: 12px 16px; margin: 0;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.card .v { font-size: 1.5rem; font-weight: 600; } .card .k { color: #52606d; font-size: .85rem; }
.card.save .v { color: #2f7d32; } .card.over .v { color: #b3261e; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px;
  margin-bottom: 16px; }
svg { width: 100%; height: auto; display: block; }
svg text { font-size: 13px; fill: #3e4c59; } svg .axis { stroke: #cbd2d9; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: .85rem; margin-top: 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
  border-radius: 2px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e4e7eb;
  vertical-align: top; } td.n, th.n { text-align: right; white-space: nowrap; }
td.msg { overflow-wrap: anywhere; min-width: 200px; }
.empty { color: #7b8794; font-style: italic; }
@media (max-width: 560px) { body { padding: 8px; } .grid { grid-template-columns: 1fr; }
  .card .v { font-size: 1.2rem; } svg text { font-size: 15px; }
  table.failures tr:first-child { display: none; }
  table.failures tr, table.failures td { display: block; border: 0; padding: 2px 0; }
  table.failures tr { border-bottom: 1px solid #e4e7eb; padding: 8px 0; }
  table.failures td.n { text-align: left; } td.msg { min-width: 0; }
  table.failures td::before { content: attr(data-label) ": "; color: #52606d; } }
"""


def _e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _short(name: str, limit: int = 46) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _nice_max(top: Decimal) -> Decimal:
    """A round axis maximum at or above `top` (1, 2, 2.5 or 5 times a power of ten)."""
    if top <= 0:
        return Decimal(1)
    power = Decimal(10) ** (top.adjusted())
    for step in (1, Decimal("2"), Decimal("2.5"), 5, 10):
        if power * step >= top:
            return power * step
    return power * 10  # pragma: no cover - the loop ends at 10


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>' for n, c in items)
    return f'<div class="legend">{spans}</div>'


def _svg(kind: str, height: int, body: str, label: str) -> str:
    return (
        f'<svg class="chart chart-{kind}" viewBox="0 0 {_W} {height}" role="img" '
        f'aria-label="{_e(label)}" preserveAspectRatio="xMinYMin meet">{body}</svg>'
    )


def _daily_chart(data: ReportData) -> str:
    """Spend per UTC day, each bar stacked by the tier that made the calls."""
    days = sorted({str(r.key[0]) for r in data.rows if r.calls})
    tiers = sorted({str(r.key[1]) for r in data.rows if r.calls})
    if not days:
        return '<p class="empty">no calls in this period</p>'
    colour = {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(tiers)}
    cost = {(str(r.key[0]), str(r.key[1])): r.cost_usd for r in data.rows}
    totals = {d: sum((cost.get((d, t), Decimal(0)) for t in tiers), Decimal(0)) for d in days}
    top = _nice_max(max(totals.values()))
    ticks = [top * i / 4 for i in range(5)]  # four gridlines and the zero line
    h, bottom, plot_h = 250, 26, 214
    left = 12 + 9 * max(len(usd(v)) for v in ticks)  # room for the widest label at 15 px
    band = (_W - left - 10) / len(days)
    bar_w = min(band * 0.7, 80)
    parts = []
    for i, v in enumerate(ticks):
        y = h - bottom - plot_h * i / 4
        parts.append(f'<line class="axis" x1="{left}" x2="{_W - 10}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(usd(v))}</text>')
    for i, d in enumerate(days):
        x = left + band * i + (band - bar_w) / 2
        y = float(h - bottom)
        for t in tiers:
            c = cost.get((d, t), Decimal(0))
            if not c:
                continue
            bh = float(c / top) * plot_h
            y -= bh
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{max(bh, 0.5):.1f}" fill="{colour[t]}"><title>{_e(d)} {_e(t)}: '
                f"{_e(usd(c))}</title></rect>"
            )
        if len(days) <= 16 or i % (len(days) // 8 + 1) == 0:  # keep the dates legible
            mid, day = x + bar_w / 2, _e(d[5:])
            parts.append(f'<text x="{mid:.1f}" y="{h - 10}" text-anchor="middle">{day}</text>')
    chart = _svg("daily", h, "".join(parts), "daily spend stacked by tier")
    return chart + _legend([(t, colour[t]) for t in tiers])


def _hbars(kind: str, rows: Sequence[tuple[str, Sequence[tuple[float, str, str]]]],
           top: float, label: str, value_text: Sequence[str]) -> str:  # fmt: skip
    """Horizontal bars, one per row: (name, stacked segments (value, colour, tooltip)). The
    name sits above its bar (a long model name gets the whole width), the value right of it."""
    if not rows:
        return '<p class="empty">nothing to show</p>'
    row_h, plot_w = 38, _W - 168  # the value goes right of the bar: up to ~19 characters
    parts = []
    for i, (name, segments) in enumerate(rows):
        y = 4 + i * row_h
        parts.append(f'<text x="0" y="{y + 12}"><title>{_e(name)}</title>{_e(_short(name))}</text>')
        parts.append(f'<text x="{plot_w + 6}" y="{y + 28}">{_e(value_text[i])}</text>')
        parts.append(f'<rect x="0" y="{y + 17}" width="{plot_w}" height="13" fill="#eef1f4"/>')
        x = 0.0
        for value, fill, tip in segments:
            w = value / top * plot_w if top else 0.0
            if w <= 0:
                continue
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 17}" width="{max(w, 1.0):.1f}" '
                f'height="13" fill="{fill}"><title>{_e(tip)}</title></rect>'
            )
            x += w
    return _svg(kind, 8 + len(rows) * row_h, "".join(parts), label)


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def _cost_by_model(data: ReportData) -> str:
    rows = sorted((r for r in data.rows if r.calls), key=lambda r: r.cost_usd, reverse=True)
    top = float(max((r.cost_usd for r in rows), default=Decimal(0)))
    bars = [
        (_name(r), [(float(r.cost_usd), _PALETTE[0], f"{_name(r)}: {usd(r.cost_usd)}, "
                     f"{_calls(r.calls)}")])
        for r in rows
    ]  # fmt: skip
    texts = [f"{usd(r.cost_usd)} · {_calls(r.calls)}" for r in rows]
    return _hbars("models", bars, top, "cost by model", texts)


def _name(r: ReportRow) -> str:
    """A model row's label: the model that served, and the one asked for when it differs."""
    served, asked = (str(v) if v is not None else "(none)" for v in r.key[:2])
    if asked == f"{served}:batch":  # the batch lane (migration 10), not another model
        return f"{served} (batch)"
    return served if served == asked else f"{served} (for {asked.rsplit('/', 1)[-1]})"


def _outcomes_by_tier(data: ReportData) -> str:
    rows = [r for r in data.rows if r.done + r.failed + r.invalid + r.pending]
    top = max((r.done + r.failed + r.invalid + r.pending for r in rows), default=0)
    bars = []
    for r in rows:
        counts = {"done": r.done, "failed": r.failed, "invalid": r.invalid, "pending": r.pending}
        tier = str(r.key[0] or "(none)")
        bars.append((tier, [(float(counts[o]), c, f"{tier}: {counts[o]} {o}")
                            for o, c in _OUTCOMES]))  # fmt: skip
    texts = [f"{r.done}/{r.done + r.failed + r.invalid + r.pending} done" for r in rows]
    chart = _hbars("outcomes", bars, float(top), "record outcomes by tier", texts)
    return chart + (_legend(_OUTCOMES) if rows else "")


def _latency(data: ReportData) -> str:
    rows = data.latency
    top = max((x.p99_ms for x in rows), default=0.0)
    shades = (("p50", "#1d4e89"), ("p95", "#4e79a7"), ("p99", "#a0c4e8"))
    bars = []
    for x in rows:  # nested: p50 dark, then what p95 and p99 add, lighter
        p50, p95, p99 = x.p50_ms, max(x.p95_ms, x.p50_ms), max(x.p99_ms, x.p95_ms, x.p50_ms)
        tip = f"{x.model}: p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms ({_calls(x.calls)})"
        segs = [(p50, shades[0][1], tip), (p95 - p50, shades[1][1], tip),
                (p99 - p95, shades[2][1], tip)]  # fmt: skip
        bars.append((x.model, segs))
    texts = [f"{x.p50_ms:.0f} / {x.p95_ms:.0f} / {x.p99_ms:.0f} ms" for x in rows]
    chart = _hbars("latency", bars, top, "latency by model (ms)", texts)
    return chart + (_legend(shades) if rows else "")


def _failures(data: ReportData) -> str:
    if not data.failures:
        return '<p class="empty">no failed calls</p>'
    head = (
        '<tr><th>error type</th><th class="n">calls</th><th class="n">records</th>'
        '<th class="n">cost</th><th>models</th><th>sample message</th></tr>'
    )
    rows = "".join(
        f'<tr><td data-label="error type">{_e(f.error_type)}</td>'
        f'<td class="n" data-label="calls">{f.calls}</td>'
        f'<td class="n" data-label="records">{f.records}</td>'
        f'<td class="n" data-label="cost">{_e(usd(f.cost_usd))}</td>'
        f'<td data-label="models">{_e(f.models)}</td>'
        f'<td class="msg" data-label="sample">{_e(f.sample_message)}</td></tr>'
        for f in data.failures
    )
    return f'<div class="scroll"><table class="failures">{head}{rows}</table></div>'


def _record_failures(data: ReportData) -> str:
    """Failed and invalid records by error type: some never made a call (no row above)."""
    if not data.record_failures:
        return ""
    head = (
        '<tr><th>error type</th><th>status</th><th class="n">records</th>'
        "<th>sample message</th></tr>"
    )
    rows = "".join(
        f'<tr><td data-label="error type">{_e(f.error_type)}</td>'
        f'<td data-label="status">{_e(f.status)}</td>'
        f'<td class="n" data-label="records">{f.records}</td>'
        f'<td class="msg" data-label="sample">{_e(f.sample_message)}</td></tr>'
        for f in data.record_failures
    )
    return (
        "<section><h2>Failed and invalid records by error type</h2>"
        f'<div class="scroll"><table class="failures">{head}{rows}</table></div></section>'
    )


def _cards(data: ReportData) -> str:
    t = data.totals
    records = t.done + t.failed + t.invalid + t.pending
    more = t.saved_usd < 0  # the yardstick was cheaper: not a saving, and not in green
    share = pct(abs(t.saved_usd) / t.baseline_usd) if t.baseline_usd else "n/a"  # free yardstick
    saved = f"{usd(abs(t.saved_usd))} ({share})" if t.priced else "n/a"
    cards = [
        ("spend", usd(t.cost_usd), _calls(t.calls), ""),
        ("records", f"{t.done} / {records} done", f"{t.failed} failed, {t.pending} pending", ""),
        ("routing cost more" if more else "routing saved", saved,
         "than the top tier's first model" if more else "against the top tier's first model",
         " over" if more else " save"),
        ("retries · fallbacks", f"{pct(rate(t.retried, t.calls))} · "
         f"{pct(rate(t.fell_back, t.calls))}", f"escalations {pct(rate(t.escalated, t.calls))}",
         ""),
    ]  # fmt: skip
    return '<div class="cards">' + "".join(
        f'<div class="card{cls}"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
        f'<div class="k">{_e(sub)}</div></div>'
        for k, v, sub, cls in cards
    ) + "</div>"  # fmt: skip


def _reserved(data: ReportData) -> str:
    """The part of the spend that is a reservation, not a bill (nothing when none is)."""
    line = reserved_line(data)
    return f'<p class="sub reserved">{_e(line)}</p>' if line else ""


def render_html(by_day_tier: ReportData, by_model: ReportData, by_tier: ReportData) -> str:
    """The whole page, from the report grouped as HTML_PARTS says (same filters each)."""
    d = by_day_tier
    scope = f"job {d.job_name}" if d.job_name else "whole database"
    since = f" since {d.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if d.since else ""
    figures = [
        ("Daily spend by tier", _daily_chart(by_day_tier)),
        ("Cost by model (the model that served)", _cost_by_model(by_model)),
        ("Record outcomes by tier", _outcomes_by_tier(by_tier)),
        ("Latency by model: p50 / p95 / p99", _latency(d)),
    ]
    body = "".join(f"<figure><h2>{_e(t)}</h2>{chart}</figure>" for t, chart in figures)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>batchroute report: {_e(scope)}</title><style>{_CSS}</style></head><body>"
        f'<h1>batchroute report</h1><p class="sub">{_e(scope)}{_e(since)} · generated '
        f"{_e(f'{d.generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC')}</p>"
        f"{_cards(d)}{_reserved(d)}"
        f'<p class="sub savings">{_e(savings_line(d))}</p>'
        f'<div class="grid">{body}</div>'
        f"<section><h2>Failed calls by error type</h2>{_failures(d)}</section>"
        f"{_record_failures(d)}"
        "</body></html>\n"
    )
