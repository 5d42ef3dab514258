"""The HTML report (issue 13): one self-contained file, drawn in headless Chromium, readable, and
safe with hostile names and messages from the database.

Chromium is Debian's `chromium` (`.ci/run` installs it when missing). The screenshot is decoded
here (PNG is zlib + per-row filters) to check that it is not blank: no new dependency.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from subprocs import query, run_cli

from batchroute.report import render, savings_line
from batchroute.report_html import HTML_PARTS, render_html
from batchroute.store import ReportData, ReportRow, ResultStore
from batchroute.types import AttemptOutcome, AttemptRow, RecordStatus, ResultRow

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing: apt-get install chromium (.ci/run does)"
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip


class Elements(HTMLParser):
    """Every start tag with its classes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, set[str], dict[str, str | None]]] = []
        self.stack: list[set[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, set((a.get("class") or "").split()), a))

    def count(self, tag: str, cls: str | None = None) -> int:
        return sum(1 for t, c, _ in self.tags if t == tag and (cls is None or cls in c))


def charts(dom: str) -> dict[str, int]:
    """Number of drawn bars (rect.bar) inside each svg.chart-KIND."""
    p = Elements()
    p.feed(dom)
    bars: Counter[str] = Counter()
    current = None
    for tag, classes, _ in p.tags:
        if tag == "svg":
            current = next((c[6:] for c in classes if c.startswith("chart-")), None)
            bars[current or "?"] += 0
        elif tag == "rect" and "bar" in classes and current:
            bars[current] += 1
    return dict(bars)


def png_colours(path: Path) -> Counter[bytes]:
    """Pixel colours of an 8-bit RGB or RGBA PNG, decoded with zlib and the five row filters."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert (depth, colour_type) in ((8, 2), (8, 6)), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw, stride = zlib.decompress(idat), width * channels
    prev, colours = bytearray(stride), Counter[bytes]()
    for y in range(height):
        start = y * (stride + 1)
        f, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = row[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                row[i] = (row[i] + a) & 255
            elif f == 2:
                row[i] = (row[i] + b) & 255
            elif f == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 255
        if y % 4 == 0:  # every fourth row is plenty to tell a drawn page from a blank one
            colours.update(bytes(row[x : x + 3]) for x in range(0, stride, channels * 2))
        prev = row
    return colours


@pytest.fixture(scope="module")
def report_html(flaky_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    r = run_cli("report", str(flaky_db), "--html", str(out))
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    return out


def test_the_report_is_one_self_contained_file(report_html: Path) -> None:
    text = report_html.read_text(encoding="utf-8")
    p = Elements()
    p.feed(text)
    assert p.count("script") == p.count("link") == p.count("img") == p.count("iframe") == 0
    assert not [a for _, _, a in p.tags if "src" in a or "href" in a]
    assert "url(" not in text
    assert "@import" not in text
    assert '<meta name="viewport"' in text  # a phone gets the narrow layout
    assert all(a.get("viewbox") for t, _, a in p.tags if t == "svg")


def test_chromium_draws_every_chart(report_html: Path, flaky_db: Path, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", report_html.as_uri()).stdout
    bars = charts(dom)
    paid = "SELECT CAST(started_at AS DATE), tier FROM attempts GROUP BY ALL HAVING SUM(cost_usd)>0"
    (days_tiers,) = query(flaky_db, f"SELECT COUNT(*) FROM ({paid})")[0]
    assert bars["daily"] == days_tiers
    models = query(flaky_db, "SELECT DISTINCT model_served, model_requested FROM results")
    assert bars["models"] == len(models)  # gemini (for gpt-4o-mini) is a model of its own
    assert bars["outcomes"] == len(query(flaky_db, "SELECT DISTINCT tier FROM results"))
    assert bars["latency"] >= len(query(flaky_db, "SELECT DISTINCT model_served FROM results"))
    p = Elements()
    p.feed(dom)
    (types,) = query(flaky_db, "SELECT COUNT(DISTINCT error_type) FROM attempts")[0]
    assert p.count("tr") - 1 == types  # the failures table: a header row, one row a type
    assert "routing saved $" in dom


@pytest.mark.parametrize("width", [1200, 390])
def test_the_screenshot_is_not_blank(report_html: Path, tmp_path: Path, width: int) -> None:
    shot = tmp_path / f"report-{width}.png"
    chromium(tmp_path, f"--screenshot={shot}", f"--window-size={width},1600",
             "--hide-scrollbars", report_html.as_uri())  # fmt: skip
    colours = png_colours(shot)
    background, most = colours.most_common(1)[0]
    assert len(colours) > 50, len(colours)  # text, bars of several colours, antialiasing
    assert most / sum(colours.values()) < 0.9, background  # a blank page is one colour
    for bar in ("#4e79a7", "#59a14f"):  # the first tier's colour and "done" are on screen
        assert bytes.fromhex(bar[1:]) in colours, bar


def test_names_and_messages_from_the_database_are_escaped(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    now = datetime(2026, 11, 3, 12, tzinfo=UTC)
    s = ResultStore(tmp_path / "evil.duckdb", clock=lambda: now)
    s.migrate()
    s.write(
        [ResultRow(job_name="j", record_key="1", run_id="r", line_no=1,
                   status=RecordStatus.FAILED, task_type=evil, tier=evil, model_requested=evil,
                   error_type=evil, error_message=evil, created_at=now)],
        [AttemptRow("r", "j", "1", 1, evil, evil, now, 120, 502, AttemptOutcome.FAILED, evil,
                    evil, Decimal("0.01"))],
    )  # fmt: skip
    page = render_html(*(s.report(by=b, since=None, job_name=None) for b in HTML_PARTS))
    p = Elements()
    p.feed(page)
    assert p.count("script") == p.count("img") == 0
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def _totals_only(cost: str, baseline: str, model: str, by: tuple[str, ...] = ()) -> ReportData:
    """A report of one priced group: only its totals and the yardstick matter here."""
    now = datetime(2026, 11, 3, 12, tzinfo=UTC)
    n = 3
    totals = ReportRow(
        key=(), calls=n, cost_usd=Decimal(cost), done=n, priced=n,
        baseline_usd=Decimal(baseline), priced_cost_usd=Decimal(cost),
    )  # fmt: skip
    return ReportData(
        by=by, since=None, job_name=None, rows=(), totals=totals, today=now.date(),
        spent_today=Decimal(cost), generated_at=now, baseline_models=(model,),
    )  # fmt: skip


def test_routing_that_cost_more_than_the_top_model_is_not_shown_as_a_saving() -> None:
    """When the top tier's first model is not the dearest (mixed.yaml: premium is o3, cheaper
    than standard's Claude), routing can cost more than the yardstick. The card must not say
    "routing saved -$0.0172" in the saving's green, nor the line "routing cost $0.0172", which
    reads as what routing spent."""
    data = [_totals_only("0.3226", "0.3054", "openai/o3", b) for b in HTML_PARTS]
    line = savings_line(data[0])
    assert line.startswith("routing cost $0.0172 (5.6 %) more than openai/o3 would have"), line
    page = render_html(*data)
    assert "routing saved" not in page
    assert "-$0.0172" not in page
    assert '<div class="card over"><div class="k">routing cost more</div>' in page
    assert '<div class="v">$0.0172 (5.6 %)</div>' in page


def test_a_free_top_model_as_the_yardstick_does_not_crash_the_report() -> None:
    """A top tier whose first model is free (a `:free` variant) prices every record at $0: the
    share of nothing cannot be computed, and the report must still be written."""
    data = _totals_only("0.01", "0", "x/free-model:free")
    line = savings_line(data)
    assert line.startswith("routing cost $0.0100 (n/a) more than x/free-model:free"), line
    for fmt in ("table", "json", "markdown"):
        assert line in render(data, fmt)
    assert "routing cost more" in render_html(data, data, data)


def test_one_call_is_not_one_calls() -> None:
    row = ReportRow(key=("openai/gpt-4o", "openai/gpt-4o"), calls=1, cost_usd=Decimal("7.75E-5"))
    data = _totals_only("0.0000775", "0.0001", "openai/o3", ("model",))
    page = render_html(data, replace(data, rows=(row,)), data)
    assert "$0.0000775 · 1 call<" in page
    assert "1 calls" not in page
