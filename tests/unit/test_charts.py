"""Charts drawn from hand-made tidy frames: the right traces, withheld values marked on the
axis, incomplete and unreliable values marked apart, carriers ranked, error bars of 1.96 noise
standard deviations."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import pytest

from coordinator import charts, frames
from tests.unit.frame_kit import frame, row

MONTHS = ("2026-01-01", "2026-02-01", "2026-03-01")
PMPM = {
    "program": (410.0, 415.5, 420.25),
    "c001": (400.0, 401.0, 402.0),
    "c002": (450.0, None, 455.0),
    "c003": (380.0, 385.0, 390.0),
}


def monthly() -> pd.DataFrame:
    rows = []
    for scope, values in PMPM.items():
        for month, value in zip(MONTHS, values, strict=True):
            rows.append(
                row(
                    scope,
                    "allowed_pmpm",
                    value,
                    noise_sd=None,
                    incomplete=scope == "program" and month == MONTHS[1],
                    unreliable=(
                        "fewer than 30 members" if scope == "c003" and month == MONTHS[2] else None
                    ),
                    month=month,
                )
            )
    return frame(rows)


def traces(fig: go.Figure, role: str) -> list[go.Scatter]:
    return [t for t in fig.data if t.meta and t.meta.get("role") == role]


def test_a_trend_draws_the_program_and_each_carrier_by_month() -> None:
    fig = charts.trend(monthly(), "cost.pmpm", "allowed_pmpm")
    assert fig.layout.meta["chart"] == "trend"
    assert fig.layout.meta["statistic"] == "allowed_pmpm"
    assert "by month" in fig.layout.title.text
    lines = {t.meta["scope"]: t for t in fig.data if t.meta["role"] in ("program", "value")}
    assert set(lines) == set(PMPM)
    for scope, values in PMPM.items():
        assert list(lines[scope].y) == list(values)
        assert [pd.Timestamp(x) for x in lines[scope].x] == [pd.Timestamp(m) for m in MONTHS]
    assert lines["program"].name == "Program"
    # Legend entries of their own, plain whatever the first point's marks.
    legend = {t.meta["scope"]: t for t in traces(fig, "legend")}
    assert set(legend) == set(PMPM) and {t.marker.symbol for t in legend.values()} == {"circle"}
    assert not any(t.showlegend is not False for t in lines.values())
    assert lines["program"].line.color == charts.PROGRAM_COLOUR
    carrier_colours = {lines[c].line.color for c in ("c001", "c002", "c003")}
    assert len(carrier_colours) == 3 and carrier_colours <= set(charts.PALETTE)


def test_a_trend_marks_withheld_on_the_axis_incomplete_and_unreliable_apart() -> None:
    fig = charts.trend(monthly(), "cost.pmpm", "allowed_pmpm")
    (withheld,) = traces(fig, "withheld")
    assert withheld.meta["scope"] == "c002"
    assert withheld.marker.symbol == "x"
    assert withheld.yaxis == "y2" and list(withheld.y) == ["c002"]
    assert pd.Timestamp(withheld.x[0]) == pd.Timestamp(MONTHS[1])
    assert charts.WITHHELD_TEXT in withheld.hovertext[0]
    # The withheld strip is under the values' plot, the months at its foot.
    strip, values = fig.layout.yaxis2.domain, fig.layout.yaxis.domain
    assert strip[0] == 0.0 and strip[1] < values[0]
    assert list(fig.layout.yaxis2.categoryarray) == ["c002"] and fig.layout.xaxis.anchor == "y2"
    lines = {t.meta["scope"]: t for t in fig.data if t.meta["role"] in ("program", "value")}
    assert list(lines["program"].marker.symbol) == ["circle", "diamond", "circle"]
    assert "incomplete" in lines["program"].hovertext[1]
    assert list(lines["c003"].marker.symbol) == ["circle", "circle", "circle-open"]
    assert "fewer than 30 members" in lines["c003"].hovertext[2]
    assert "NCHS" in lines["c003"].hovertext[2]
    assert {t.meta["key"] for t in traces(fig, "key")} == {"withheld", "incomplete", "unreliable"}
    notes = " ".join(a.text for a in fig.layout.annotations)
    assert "NCHS data presentation standards" in notes
    assert charts.WITHHELD_TEXT in notes


def test_a_trend_without_marks_has_no_key_and_no_withheld_trace() -> None:
    clean = monthly()
    clean = clean[~clean["withheld"] & ~clean["unreliable"] & ~clean["incomplete"]]
    fig = charts.trend(clean, "cost.pmpm", "allowed_pmpm")
    assert not traces(fig, "withheld") and not traces(fig, "key")


def test_a_trend_leaves_out_cells_of_other_dimensions_unless_fixed() -> None:
    rows = [
        row("program", "allowed_pmpm", 10.0 + i, month=m, state=s)
        for i, m in enumerate(MONTHS)
        for s in ("CA", "NY")
    ]
    by_state = frame(rows, dims=("month", "state"))
    with pytest.raises(ValueError):
        charts.trend(by_state, "cost.pmpm", "allowed_pmpm")
    fig = charts.trend(by_state, "cost.pmpm", "allowed_pmpm", where={"state": "NY"})
    (line,) = traces(fig, "program")
    assert list(line.y) == [10.0, 11.0, 12.0]
    assert "state NY" in fig.layout.title.text


def test_the_latest_round_gives_a_month_run_again() -> None:
    first = monthly()
    again = frame(
        [
            row("program", "allowed_pmpm", 999.0, month=MONTHS[2], round_id="r-20260401000000-b"),
        ]
    )
    fig = charts.trend(pd.concat([first, again]), "cost.pmpm", "allowed_pmpm")
    (line,) = traces(fig, "program")
    assert list(line.y) == [410.0, 415.5, 999.0]


def comparison_frame() -> pd.DataFrame:
    return frame(
        [
            row("program", "members", 1000.0, kind="members", noise_sd=0.0),
            row("c001", "members", 300.0, kind="members", noise_sd=2.45),
            row("c002", "members", 500.0, kind="members", noise_sd=1.7),
            row("c003", "members", None, kind="members", noise_sd=None),
            row("c004", "members", 200.0, kind="members", noise_sd=0.0),
            row("c005", "members", 25.0, kind="members", noise_sd=1.7, unreliable="25 members"),
        ],
        dims=(),
    )


def test_a_comparison_ranks_carriers_with_error_bars_of_the_documented_noise() -> None:
    fig = charts.comparison(comparison_frame(), "cost.pmpm", "members")
    assert fig.layout.meta["chart"] == "comparison"
    (points,) = traces(fig, "value")
    assert list(points.y) == ["c002", "c001", "c004", "c005"]
    assert list(points.x) == [500.0, 300.0, 200.0, 25.0]
    # Error bars where the noise is documented and not zero (c004 is exact).
    (noise,) = traces(fig, "noise")
    assert list(noise.y) == ["c002", "c001", "c005"]
    assert list(noise.x) == [500.0, 300.0, 25.0]
    assert noise.error_x.array == pytest.approx([1.96 * 1.7, 1.96 * 2.45, 1.96 * 1.7])
    assert list(points.marker.symbol) == ["circle", "circle", "circle", "circle-open"]
    assert "unreliable" in points.hovertext[3]
    (withheld,) = traces(fig, "withheld")
    assert list(withheld.y) == ["c003"] and list(withheld.text) == ["withheld"]
    assert list(fig.layout.yaxis.categoryarray) == ["c002", "c001", "c004", "c005", "c003"]
    assert fig.layout.yaxis.autorange == "reversed"
    (line,) = fig.layout.shapes
    assert line.x0 == 1000.0
    notes = " ".join(a.text for a in fig.layout.annotations)
    assert "1.96" in notes and "not published" not in notes


def test_a_comparison_in_dollars_says_where_the_noise_is_not_published() -> None:
    dollars = frame(
        [
            row("c001", "allowed_cents", 123456.0, kind="cents", noise_sd=None),
            row("c002", "allowed_cents", 654321.0, kind="cents", noise_sd=None),
            row("c003", "allowed_cents", 200000.0, kind="cents", noise_sd=100.0),
        ],
        dims=(),
    )
    fig = charts.comparison(dollars, "cost.pmpm", "allowed_cents")
    (points,) = traces(fig, "value")
    assert list(points.x) == [6543.21, 2000.0, 1234.56]
    (noise,) = traces(fig, "noise")
    assert list(noise.y) == ["c003"] and noise.error_x.array == pytest.approx([1.96])
    notes = " ".join(a.text for a in fig.layout.annotations)
    assert "not published" in notes
    assert "dollars" in fig.layout.xaxis.title.text


def test_a_comparison_of_a_monthly_table_takes_the_latest_month_or_the_one_asked() -> None:
    fig = charts.comparison(monthly(), "cost.pmpm", "allowed_pmpm")
    assert fig.layout.meta["month"] == "2026-03"
    (points,) = traces(fig, "value")
    assert list(points.y) == ["c002", "c001", "c003"]
    fig = charts.comparison(monthly(), "cost.pmpm", "allowed_pmpm", month="2026-02")
    (points,) = traces(fig, "value")
    assert list(points.y) == ["c001", "c003"]
    (withheld,) = traces(fig, "withheld")
    assert list(withheld.y) == ["c002"]


def category_frame(months: tuple[str, ...] = ()) -> pd.DataFrame:
    values = {"inpatient": 120.0, "outpatient": 80.0, "pharmacy": 95.0, "behavioral": None}
    rows = []
    for m in months or (None,):
        for category, value in values.items():
            rows.append(
                row(
                    "program",
                    "allowed_pmpm",
                    value,
                    metric="cost.pmpm_by_service_category",
                    incomplete=category == "pharmacy",
                    unreliable="12 events" if category == "outpatient" else None,
                    month=m,
                    service_category=category,
                )
            )
        rows.append(
            row(
                "c001",
                "allowed_pmpm",
                1.0,
                metric="cost.pmpm_by_service_category",
                month=m,
                service_category="inpatient",
            )
        )
    return frame(rows, dims=("month", "service_category"))


def test_a_breakdown_ranks_the_program_by_service_category() -> None:
    fig = charts.breakdown(category_frame(), "cost.pmpm_by_service_category", "allowed_pmpm")
    assert fig.layout.meta["chart"] == "breakdown"
    assert fig.layout.meta["dimension"] == "service_category"
    (bars,) = traces(fig, "value")
    assert list(bars.y) == ["inpatient", "pharmacy", "outpatient"]
    assert list(bars.x) == [120.0, 95.0, 80.0]
    assert list(bars.marker.pattern.shape) == ["", "/", ""]
    assert list(bars.marker.opacity) == [1.0, 1.0, 0.35]
    (withheld,) = traces(fig, "withheld")
    assert list(withheld.y) == ["behavioral"]


def test_a_breakdown_by_month_stacks_the_categories() -> None:
    fig = charts.breakdown(
        category_frame(MONTHS[:2]), "cost.pmpm_by_service_category", "allowed_pmpm"
    )
    assert fig.layout.barmode == "stack"
    bars = {t.meta["category"]: t for t in traces(fig, "value")}
    assert set(bars) == {"behavioral", "inpatient", "outpatient", "pharmacy"}
    assert list(bars["inpatient"].y) == [120.0, 120.0]
    (withheld,) = traces(fig, "withheld")
    assert len(withheld.x) == 2 and set(withheld.y) == {"behavioral"}
    assert withheld.yaxis == "y2" and list(fig.layout.yaxis2.categoryarray) == ["behavioral"]


def test_suggest_picks_the_charts_that_apply() -> None:
    both = frames.concat([monthly(), category_frame()])
    suggested = charts.suggest(both)
    kinds = [(f.layout.meta["chart"], f.layout.meta["metric"]) for _, f in suggested]
    assert kinds == [
        ("trend", "cost.pmpm"),
        ("comparison", "cost.pmpm"),
        ("breakdown", "cost.pmpm_by_service_category"),
    ]
    assert all(title == f.layout.title.text for title, f in suggested)


def test_suggest_charts_figures_only_where_a_metric_has_them() -> None:
    mixed = pd.concat(
        [
            monthly(),
            frame([row("program", "member_months", 3000.0, kind="count", month=m) for m in MONTHS]),
        ],
        ignore_index=True,
    )
    statistics = {f.layout.meta["statistic"] for _, f in charts.suggest(mixed)}
    assert statistics == {"allowed_pmpm"}


def test_figures_serialise_without_nan() -> None:
    for _, fig in charts.suggest(monthly()):
        text = fig.to_json()
        assert "NaN" not in text
        assert not any(
            isinstance(v, float) and math.isnan(v) for t in fig.data for v in (t.y or ())
        )


def test_a_figure_of_withheld_statistics_is_marked_withheld_and_nothing_to_divide_by_is_not() -> (
    None
):
    # A carrier's rate whose inputs its node withheld has no value and rests on withheld ones.
    of_withheld = {**row("c002", "visits_per_1000", None), "withheld": False, "incomplete": True}
    of_withheld["status"] = "incomplete"
    no_value = {**row("c003", "visits_per_1000", None), "withheld": False, "status": "released"}
    rows = [row("c001", "visits_per_1000", 480.0, month=MONTHS[0]), of_withheld, no_value]
    for r in rows[1:]:
        r["month"] = MONTHS[0]
    data = frame([{**r, "metric": "util.ed_visits"} for r in rows])
    fig = charts.comparison(data, "util.ed_visits", "visits_per_1000")
    (withheld,) = traces(fig, "withheld")
    assert list(withheld.y) == ["c002"]
    (empty,) = traces(fig, "no_value")
    assert list(empty.y) == ["c003"] and list(empty.text) == ["no value"]
    trend_rows = [
        {**r, "month": m}
        for m in MONTHS[:2]
        for r in (row("c001", "visits_per_1000", 480.0), of_withheld)
    ]
    fig = charts.trend(
        frame([{**r, "metric": "util.ed_visits"} for r in trend_rows]),
        "util.ed_visits",
        "visits_per_1000",
    )
    (withheld,) = traces(fig, "withheld")
    assert withheld.meta["scope"] == "c002" and len(withheld.x) == 2


def test_withheld_marks_of_several_carriers_in_a_month_have_a_row_each() -> None:
    rows = [
        {**row(scope, "allowed_pmpm", value), "month": m}
        for m in MONTHS
        for scope, value in (("c001", 400.0), ("c002", None), ("c003", None), ("c004", None))
    ]
    fig = charts.trend(frame(rows), "cost.pmpm", "allowed_pmpm")
    rows_of = {t.meta["scope"]: set(t.y) for t in traces(fig, "withheld")}
    assert rows_of == {"c002": {"c002"}, "c003": {"c003"}, "c004": {"c004"}}
    assert list(fig.layout.yaxis2.categoryarray) == ["c002", "c003", "c004"]
