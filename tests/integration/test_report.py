"""``oversight report``, run as operators run it (a process of its own, mutual TLS) against a
live federation on loopback, with a viewer's credentials: one self-contained page naming the
round, its period and completeness, with charts and the program's values as the round has
them."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from coordinator import charts
from coordinator.client import RoundOutcome
from coordinator.frames import round_frame
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from fedoversight.testing import VIEWER, SimulatedFederation
from tests.integration.test_operator_api import cli
from tests.integration.test_trust import small

PERIOD = Period.parse("2026-01:2026-03")
QUERIES = [
    QuerySpec("cost.pmpm", 1, group_by=(D.MONTH,)),
    # Few admissions a month at a small carrier: some carrier values are withheld.
    QuerySpec("util.inpatient", 1, group_by=(D.MONTH,)),
    QuerySpec("cost.pmpm_by_service_category", 1, group_by=(D.SERVICE_CATEGORY,)),
]


class Tables(HTMLParser):
    """The page's value tables: metric -> (headers, rows of cell values), and every external
    reference and script."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, tuple[list[str], list[list[str]]]] = {}
        self.references: list[str] = []
        self.script_sources: list[str] = []
        self._metric: str | None = None
        self._text: list[str] | None = None
        self._in_value = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href"):
            if a.get(name):
                self.references.append(str(a[name]))
        if tag == "script" and "src" in a:
            self.script_sources.append(str(a["src"]))
        if tag == "table" and a.get("data-metric"):
            self._metric = str(a["data-metric"])
            self.tables[self._metric] = ([], [])
        elif self._metric is not None:
            if tag == "tr":
                self.tables[self._metric][1].append([])
            elif tag in ("td", "th"):
                self._text = []
            elif tag == "sup":
                self._in_value = True  # a mark, not part of the value

    def handle_endtag(self, tag: str) -> None:
        if self._metric is None:
            return
        if tag == "sup":
            self._in_value = False
        elif tag in ("td", "th") and self._text is not None:
            text = "".join(self._text).strip()
            headers, rows = self.tables[self._metric]
            (headers if tag == "th" else rows[-1]).append(text)
            self._text = None
        elif tag == "table":
            headers, rows = self.tables[self._metric]
            self.tables[self._metric] = (headers, [r for r in rows if r])
            self._metric = None

    def handle_data(self, data: str) -> None:
        if self._text is not None and not self._in_value:
            self._text.append(data)


def expected_text(value: object, cents: bool) -> str:
    if value is None:
        return "withheld"
    assert isinstance(value, int)
    if cents:
        whole, part = divmod(value, 100)
        return f"${whole:,}.{part:02d}"
    return f"{value:,}"


def program_values(outcome: RoundOutcome, metric: str) -> dict[tuple[str, str], str]:
    """(month, statistic) -> the text the page should show, for integer statistics."""
    (table,) = [t for t in outcome.tables if t.scope == "program" and t.metric == metric]
    out = {}
    for cell in table.cells:
        month = dict(cell.key)[D.MONTH]
        for stat in cell.stats:
            if stat.value is None or isinstance(stat.value, int):
                out[(month, stat.name)] = expected_text(stat.value, stat.name.endswith("_cents"))
    return out


async def test_the_report_is_one_page_with_the_rounds_charts_and_values(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 3)
    page = tmp_path / "out" / "report.html"
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        assert fed.client is not None
        outcome = await fed.client.run_round(PERIOD, QUERIES, deadline_seconds=120)
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-c",
                "from oversight_sim.cli import main; main()",
                *cli(fed, "report", outcome.round_id, "-o", str(page), name=VIEWER),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    # The console may wrap a long path anywhere, even inside a name.
    assert f"wrote{page}" in "".join(done.stdout.split()), done.stdout
    html = page.read_text(encoding="utf-8")
    parsed = Tables()
    parsed.feed(html)
    # Self-contained: nothing fetched, Plotly inlined once.
    assert not parsed.script_sources and not re.search(r"<link\b", html)
    assert not [r for r in parsed.references if re.match(r"(https?:)?//", r)], parsed.references
    assert len(re.findall(r"plotly\.js v\d", html)) == 1
    # The round, its period and completeness.
    assert outcome.round_id in html and str(PERIOD) in html
    answered = f"{outcome.answered} of {len(outcome.carriers)} carriers answered"
    assert answered in html
    for carrier, _, _ in outcome.carriers:
        assert f"<td>{carrier}</td>" in html
    # Charts: the monthly trend of PMPM and the service-category breakdown.
    assert html.count("Plotly.newPlot(") >= 3
    assert '"chart":"trend"' in html.replace(" ", "")
    assert '"chart":"breakdown"' in html.replace(" ", "")
    # The program's values as the round has them, cell by cell.
    headers, rows = parsed.tables["cost.pmpm"]
    assert headers[0] == "month"
    shown = {(r[0], h): v for r in rows for h, v in zip(headers[1:], r[1:], strict=True)}
    expected = program_values(outcome, "cost.pmpm")
    assert expected and {k: shown[k] for k in expected} == expected
    assert "cost.pmpm_by_service_category" in parsed.tables
    # Charted values withheld by a carrier's disclosure control are marked, one by one: for
    # each trend the report draws, every value of its metric and figure that has none because
    # a carrier withheld it (or what it rests on).
    frame = round_frame(outcome)
    # The charts' JSON may escape non-ASCII text (plotly's encoder without orjson does).
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), html)
    trends = [
        fig.layout.meta
        for _, fig in charts.suggest(frame)
        if (fig.layout.meta or {}).get("chart") == "trend"
    ]
    assert trends
    marked = 0
    for meta in trends:
        drawn = frame[
            (frame["metric"] == meta["metric"]) & (frame["statistic"] == meta["statistic"])
        ]
        withheld = drawn[drawn["withheld"] | (drawn["value"].isna() & drawn["incomplete"])]
        for _, value in withheld.iterrows():
            where = f"{value['scope']} · {value['month']:%Y-%m}: withheld by"
            assert where in text, where
            marked += 1
    assert marked, "the planted small carriers withhold some charted value"
