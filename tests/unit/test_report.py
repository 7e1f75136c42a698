"""The report page from a hand-made frame: the round at the top, Plotly inlined once, nothing
fetched from elsewhere, charts and marked tables."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from coordinator.cli import app as oversight_app
from coordinator.report import format_value, render_report
from tests.unit.frame_kit import frame, row
from tests.unit.test_charts import MONTHS, category_frame, monthly

ROUND = "r-20260201000000-aaaaaaaa"


def report_frame() -> pd.DataFrame:
    f = pd.concat([monthly(), category_frame(MONTHS[:2])], ignore_index=True)
    f.attrs = {
        "round_id": ROUND,
        "period": "2026-01:2026-03",
        "state": "partial",
        "carriers_asked": 4,
        "carriers_answered": 3,
        "carriers": [
            {"carrier_id": "c001", "state": "answered", "message": ""},
            {"carrier_id": "c004", "state": "unavailable", "message": "did not answer in time"},
        ],
        "late": ["c009"],
        "complete": False,
    }
    return f


class Page(HTMLParser):
    """Scripts, external references and table cells of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.references: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.references.append(value)
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_the_page_names_the_round_and_holds_everything_it_shows() -> None:
    html = render_report(report_frame(), generated=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    page = parse(html)
    assert not page.references, page.references
    assert all("src" not in s for s in page.scripts)
    assert not re.search(r"<link\b", html)
    # Plotly's library once, then one call per chart.
    assert html.count("Plotly.newPlot(") == 3
    assert len(re.findall(r"plotly\.js v\d", html)) == 1
    assert ROUND in html and "2026-01:2026-03" in html and "2026-04-01 00:00 UTC" in html
    assert "3 of 4 carriers answered" in html
    assert "did not answer in time" in html
    assert re.search(r"answered after the round finished[^<]*c009", html)
    assert "@media print" in html


def test_the_tables_mark_withheld_incomplete_unreliable_values() -> None:
    page = parse(render_report(report_frame()))
    # The program's monthly values, the second incomplete.
    assert "410.00p" in page.cells
    assert "415.50i" in page.cells
    # Service categories: a withheld category, an unreliable one.
    assert "withheldW" in page.cells
    assert "80.00up" in page.cells
    html = render_report(report_frame())
    assert "NCHS data presentation standards" in html
    assert "docs/disclosure.md" in html


def test_values_print_exactly() -> None:
    cents = frame([row("program", "allowed_cents", 123456789.0, kind="cents")], dims=())
    assert format_value(cents.iloc[0]) == "$1,234,567.89"
    count = frame([row("program", "member_months", 12345.0, kind="count")], dims=())
    assert format_value(count.iloc[0]) == "12,345"
    rate = frame([row("program", "share", 0.012345, kind="figure")], dims=())
    assert format_value(rate.iloc[0]) == "0.01235"
    withheld = frame([row("program", "share", None, kind="figure")], dims=())
    assert format_value(withheld.iloc[0]) == ""


def test_an_empty_round_still_says_what_it_is() -> None:
    empty = report_frame().iloc[0:0]
    empty.attrs = {**report_frame().attrs, "state": "failed", "carriers_answered": 0}
    html = render_report(empty)
    assert "0 of 4 carriers answered" in html
    assert "No chart applies" in html and "The round has no tables" in html


def test_the_command_refuses_an_output_that_is_not_html(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        oversight_app, ["report", "r-1", "--output", str(tmp_path / "report.pdf")]
    )
    assert result.exit_code == 2
    assert "HTML" in result.output and not (tmp_path / "report.pdf").exists()


def test_an_incomplete_sum_of_perturbed_values_is_marked_perturbed_with_its_noise() -> None:
    data = frame(
        [row("program", "members", 1200.0, kind="members", incomplete=True, noise_sd=2.45)],
        dims=(),
    )
    data.attrs = report_frame().attrs
    html = render_report(data)
    assert "1,200ip" in parse(html).cells
    assert 'title="status: incomplete; leaves out carrier values: 1, members at most: 10;' in html
    assert "noise sd 2.45" in html
