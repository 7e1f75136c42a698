"""The monthly oversight report: one self-contained HTML page of a round (``oversight report``).

At the top the round: its id, period, state and completeness (carriers asked and answered,
each carrier's state and, when it did not answer, why). Then a key to the marks, the charts
:func:`coordinator.charts.suggest` picks for the round, and each metric's program values in a
table, marked withheld, incomplete, unreliable or perturbed.

The page holds everything it shows: Plotly's JavaScript (from the installed package) once,
inline, and no other script, style sheet, font or image from anywhere. Its print style sheet
lays it out for the browser's "print to PDF". The template is ``templates/report.html.j2`` in
this package.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
from markupsafe import Markup

from coordinator import charts
from fedoversight import catalogue
from fedoversight.dimensions import Dimension
from fedoversight.errors import UnknownMetricError

__all__ = ["Mark", "ReportCell", "format_value", "render_report", "write_report"]

_DIMENSIONS = tuple(str(d) for d in Dimension)
#: Plotly's options for every chart of the page: no logo link, no editing, no cloud.
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Mark:
    """A mark on a value, and what it means (the key at the top of the page)."""

    symbol: str
    css: str
    name: str
    meaning: str


WITHHELD = Mark(
    "W",
    "withheld",
    "withheld",
    "withheld by a carrier's disclosure control (a value resting on too few members, see"
    " docs/disclosure.md); no value is shown",
)
INCOMPLETE = Mark(
    "i",
    "incomplete",
    "incomplete",
    "a program value leaving out withheld or unanswered carrier values: it says from how many"
    " carriers and, where known, at most how much",
)
UNRELIABLE = Mark(
    "u",
    "unreliable",
    "unreliable",
    "a rate resting on too few events or members for a stable rate (fewer than 20 events or"
    " 30 members; NCHS data presentation standards)",
)
PERTURBED = Mark(
    "p",
    "perturbed",
    "perturbed",
    "moved by the carriers' consistent disclosure noise, of the standard deviation documented"
    " in docs/disclosure.md (given on each value where it is published; dollar noise under"
    " cell-key perturbation is not)",
)
MARKS = (WITHHELD, INCOMPLETE, UNRELIABLE, PERTURBED)


@dataclass(frozen=True)
class ReportCell:
    """One value of a table as the page shows it."""

    text: str
    marks: tuple[Mark, ...] = ()
    #: Hover text: status, noise and what the value leaves out.
    title: str = ""

    @property
    def css(self) -> str:
        return " ".join(m.css for m in self.marks)


@dataclass(frozen=True)
class ReportTable:
    metric: str
    title: str
    columns: tuple[str, ...]
    #: Dimension values, then one cell per statistic.
    rows: tuple[tuple[tuple[str, ...], tuple[ReportCell, ...]], ...]
    dimensions: tuple[str, ...]


@dataclass(frozen=True)
class ReportChart:
    title: str
    chart_id: str
    html: Markup


def format_value(row: pd.Series) -> str:
    """A value as the page prints it: dollars for cents (exact), integers with thousands
    separators, figures to two decimals (four significant digits below one)."""
    kind = row.get("kind")
    exact = row.get("value_int")
    value = row.get("value")
    if kind == "cents" and exact is not None and not pd.isna(exact):
        cents = int(exact)
        sign = "-" if cents < 0 else ""
        whole, part = divmod(abs(cents), 100)
        return f"{sign}${whole:,}.{part:02d}"
    if exact is not None and not pd.isna(exact):
        return f"{int(exact):,}"
    if value is None or pd.isna(value):
        return ""
    number = float(value)
    if kind != "figure" and number.is_integer():
        return f"{int(number):,}"
    return f"{number:,.4g}" if abs(number) < 1 else f"{number:,.2f}"


def render_report(frame: pd.DataFrame, *, generated: dt.datetime | None = None) -> str:
    """The page of a round's frame (:func:`coordinator.frames.round_frame`); the round comes
    from ``frame.attrs``."""
    attrs = dict(frame.attrs)
    generated = generated or dt.datetime.now(dt.UTC)
    figures = charts.suggest(frame) if not frame.empty else []
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("coordinator", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template("report.html.j2")
    return template.render(
        round=_round(attrs, frame),
        generated=f"{generated:%Y-%m-%d %H:%M} UTC",
        marks=MARKS,
        charts=[_chart(i, title, fig) for i, (title, fig) in enumerate(figures)],
        tables=_tables(frame),
        plotly_js=Markup(_inline_script(plotly.offline.get_plotlyjs())),
    )


def write_report(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(frame), encoding="utf-8")


# --- helpers ----------------------------------------------------------------------------------


def _inline_script(js: str) -> str:
    """Script text safe inside ``<script>``: it must not close the element early."""
    return js.replace("</script", "<\\/script")


def _round(attrs: dict[str, object], frame: pd.DataFrame) -> dict[str, object]:
    def first(column: str) -> object:
        if column in frame.columns and not frame.empty:
            return frame[column].iloc[0]
        return ""

    carriers = attrs.get("carriers") or []
    assert isinstance(carriers, list)
    late = attrs.get("late")
    asked = attrs.get("carriers_asked", first("carriers_asked"))
    answered = attrs.get("carriers_answered", first("carriers_answered"))
    complete = bool(attrs.get("complete", asked == answered))
    if complete:
        note = "complete"
    elif asked != answered:
        note = "program values leave out the carriers that did not answer"
    else:
        note = "every carrier answered; values withheld by carriers' disclosure control are marked"
    return {
        "round_id": attrs.get("round_id", first("round_id")),
        "period": attrs.get("period", first("period")),
        "state": attrs.get("state", ""),
        "carriers_asked": asked,
        "carriers_answered": answered,
        "complete": complete,
        "completeness_note": note,
        "carriers": [
            {
                "carrier_id": c.get("carrier_id", ""),
                "state": c.get("state", ""),
                "message": c.get("message", ""),
            }
            for c in carriers
        ],
        "late": [str(c) for c in late] if isinstance(late, list | tuple) else [],
        "metrics": [str(m) for m in pd.unique(frame["metric"])] if not frame.empty else [],
    }


def _chart(index: int, title: str, fig: go.Figure) -> ReportChart:
    meta = dict(fig.layout.meta or {})
    chart_id = f"chart-{index}-{meta.get('chart', 'chart')}"
    html = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=chart_id,
        config=PLOT_CONFIG,
        default_height=f"{int(fig.layout.height or 450)}px",
        default_width="100%",
    )
    return ReportChart(title=title, chart_id=chart_id, html=Markup(html))


def _metric_title(metric: str) -> str:
    try:
        return f"{catalogue.get_metric(metric).title} ({metric})"
    except UnknownMetricError:
        return metric


def _tables(frame: pd.DataFrame) -> list[ReportTable]:
    if frame.empty:
        return []
    program = frame[frame["scope"] == charts.PROGRAM]
    out = []
    for metric in pd.unique(program["metric"]):
        rows = program[program["metric"] == metric]
        dims = tuple(
            c
            for c in rows.columns
            if c in _DIMENSIONS and c != str(Dimension.CARRIER) and rows[c].notna().any()
        )
        statistics = tuple(str(s) for s in pd.unique(rows["statistic"]))
        cells: dict[tuple[str, ...], dict[str, ReportCell]] = {}
        for _, row in rows.iterrows():
            key = tuple(_dimension_text(d, row[d]) for d in dims)
            cells.setdefault(key, {})[str(row["statistic"])] = _cell(row)
        out.append(
            ReportTable(
                metric=str(metric),
                title=_metric_title(str(metric)),
                columns=statistics,
                dimensions=dims,
                rows=tuple(
                    (key, tuple(values.get(s, ReportCell("")) for s in statistics))
                    for key, values in cells.items()
                ),
            )
        )
    return out


def _dimension_text(dimension: str, value: object) -> str:
    if value is None or pd.isna(value):
        return "all"
    if dimension == str(Dimension.MONTH):
        return f"{pd.Timestamp(value):%Y-%m}"
    return str(value)


def _cell(row: pd.Series) -> ReportCell:
    marks: list[Mark] = []
    notes: list[str] = [f"status: {row.get('status')}"]
    withheld = _true(row.get("withheld")) or row.get("status") == "withheld"
    if withheld or (_true(row.get("incomplete")) and not _has_value(row)):
        # A figure of withheld statistics has no value for the same reason.
        marks.append(WITHHELD)
    if _true(row.get("incomplete")):
        marks.append(INCOMPLETE)
        notes.append(_left_out(row))
    if _true(row.get("unreliable")):
        marks.append(UNRELIABLE)
        reason = row.get("unreliable_reason")
        if reason is not None and not pd.isna(reason):
            notes.append(f"unreliable: {reason}")
    sd = row.get("noise_sd")
    known = sd is not None and not pd.isna(sd)
    # Perturbed, or an incomplete sum of perturbed values (its noise is documented).
    if row.get("status") == "perturbed" or (known and float(sd) > 0):
        marks.append(PERTURBED)
        if not known:
            notes.append("noise not published")
        else:
            scale = 0.01 if row.get("kind") == "cents" else 1.0
            unit = " dollars" if scale != 1.0 else ""
            notes.append(f"noise sd {float(sd) * scale:,.4g}{unit}")
    text = "withheld" if WITHHELD in marks and not _has_value(row) else format_value(row)
    return ReportCell(text=text, marks=tuple(marks), title="; ".join(notes))


def _left_out(row: pd.Series) -> str:
    parts: list[str] = []
    for column, what in (
        ("missing_carriers", "carrier values"),
        ("missing_at_most", "at most (own unit)"),
        ("missing_members_at_most", "members at most"),
    ):
        value = row.get(column)
        if value is not None and not pd.isna(value):
            parts.append(f"{what}: {int(value):,}")
    return "leaves out " + (", ".join(parts) if parts else "carrier values")


def _has_value(row: pd.Series) -> bool:
    value = row.get("value")
    exact = row.get("value_int")
    return not (pd.isna(value) if value is not None else True) or not (
        pd.isna(exact) if exact is not None else True
    )


def _true(value: object) -> bool:
    return value is not None and not pd.isna(value) and bool(value)
