"""The results page's charts (Plotly figures, drawn in the browser by the served plotly.js).

Every chart the dashboard draws is built here: the trend by month with each carrier's line,
the carriers compared (ranked, with the noise their disclosure summaries document) and the
breakdown by service category. A figure value that is withheld or incomplete has no point; an
unreliable one is drawn hollow and says so on hover.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from coordinator.combine import PROGRAM_SCOPE, CombinedCell, ScopedTable
from coordinator.dashboard.results import Section, unreliable
from fedoversight import catalogue
from fedoversight.dimensions import Dimension
from fedoversight.errors import UnknownMetricError
from fedoversight.histogram import Histogram

#: z for a 95% interval.
Z95 = 1.96
_LAYOUT = {
    "template": "plotly_white",
    "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "height": 380,
    "legend": {"orientation": "h", "y": -0.2},
}


def _value(cell: CombinedCell, figure: str) -> float | None:
    try:
        fig = cell.figure(figure)
    except KeyError:
        return None
    if not fig.complete or not math.isfinite(fig.value):
        return None
    return fig.value


def _key(cell: CombinedCell, dim: Dimension) -> str | None:
    return next((v for d, v in cell.key if d is dim), None)


def trend(section: Section, figure: str) -> go.Figure | None:
    """The figure by month: the program's line and each carrier's (grouped by month alone)."""
    if section.group_by != (Dimension.MONTH,):
        return None
    spec = _spec(section)
    out = go.Figure()
    for table in section.tables:
        cells = sorted(table.cells, key=lambda c: _key(c, Dimension.MONTH) or "")
        months = [_key(c, Dimension.MONTH) for c in cells]
        values = [_value(c, figure) for c in cells]
        shaky = [unreliable(spec, c, figure) for c in cells]
        program = table.scope == PROGRAM_SCOPE
        out.add_trace(
            go.Scatter(
                x=months,
                y=values,
                name="program" if program else table.scope,
                mode="lines+markers",
                line={"width": 4 if program else 1.5, "color": "#1f2937" if program else None},
                marker={
                    "symbol": ["circle-open" if s else "circle" for s in shaky],
                    "size": [11 if s else 7 for s in shaky],
                },
                customdata=["unreliable (too few cases)" if s else "" for s in shaky],
                hovertemplate="%{x}: %{y:,.2f} %{customdata}<extra>%{fullData.name}</extra>",
            )
        )
    out.update_layout(
        title=f"{figure} by month", xaxis_title="month", yaxis_title=figure, **_LAYOUT
    )
    out.update_xaxes(type="category")
    return out


def comparison(section: Section, figure: str) -> go.Figure | None:
    """Carriers ranked by the figure (in the last month when grouped by month), with a 95%
    interval where a carrier's disclosure summary documents the noise added to its cases."""
    if section.group_by not in ((), (Dimension.MONTH,)):
        return None
    spec = _spec(section)
    month = None
    if section.group_by:
        month = max(_key(c, Dimension.MONTH) or "" for t in section.tables for c in t.cells)
    bars: list[tuple[str, float, float | None, bool]] = []
    program_value: float | None = None
    for table in section.tables:
        cell = _cell_in(table, month)
        if cell is None:
            continue
        value = _value(cell, figure)
        if value is None:
            continue
        if table.scope == PROGRAM_SCOPE:
            program_value = value
            continue
        bars.append(
            (
                table.scope,
                value,
                _half_width(table, cell, figure, value),
                bool(unreliable(spec, cell, figure)),
            )
        )
    if not bars:
        return None
    bars.sort(key=lambda b: b[1])
    out = go.Figure(
        go.Bar(
            x=[b[1] for b in bars],
            y=[b[0] for b in bars],
            orientation="h",
            marker={
                "color": ["#cbd5e1" if b[3] else "#2563eb" for b in bars],
                "line": {"color": "#2563eb", "width": 1},
            },
            error_x={
                "type": "data",
                "array": [b[2] or 0 for b in bars],
                "visible": any(b[2] for b in bars),
            },
            customdata=["unreliable (too few cases)" if b[3] else "" for b in bars],
            hovertemplate="%{y}: %{x:,.2f} %{customdata}<extra></extra>",
        )
    )
    if program_value is not None:
        out.add_vline(x=program_value, line_dash="dash", annotation_text="program")
    title = f"{figure} by carrier" + (f", {month}" if month else "")
    layout = dict(_LAYOUT, height=max(260, 40 + 24 * len(bars)))
    out.update_layout(title=title, xaxis_title=figure, showlegend=False, **layout)
    return out


def breakdown(section: Section, figure: str) -> go.Figure | None:
    """The program's figure by service category (queries grouped by a category level)."""
    dims = [
        d
        for d in section.group_by
        if d in (Dimension.SERVICE_CATEGORY, Dimension.SERVICE_CATEGORY_2)
    ]
    if len(dims) != 1 or len(section.group_by) != 1:
        return None
    program = next((t for t in section.tables if t.scope == PROGRAM_SCOPE), None)
    if program is None:
        return None
    pairs = [(_key(c, dims[0]) or "", _value(c, figure)) for c in program.cells]
    shown = sorted(((k, v) for k, v in pairs if v is not None), key=lambda p: p[1])
    if not shown:
        return None
    out = go.Figure(go.Bar(x=[v for _, v in shown], y=[k for k, _ in shown], orientation="h"))
    layout = dict(_LAYOUT, height=max(260, 40 + 24 * len(shown)))
    out.update_layout(
        title=f"{figure} by {dims[0]}", xaxis_title=figure, showlegend=False, **layout
    )
    return out


def charts(section: Section, figure: str) -> list[tuple[str, go.Figure]]:
    """The charts that fit the section's grouping, by kind."""
    built = [
        ("trend", trend(section, figure)),
        ("comparison", comparison(section, figure)),
        ("breakdown", breakdown(section, figure)),
    ]
    return [(kind, fig) for kind, fig in built if fig is not None]


def to_json(figure: go.Figure) -> str:
    """The figure as JSON safe inside a ``<script type="application/json">`` element."""
    text: str = figure.to_json()
    return text.replace("</", "<\\/")


def _spec(section: Section) -> catalogue.MetricSpec | None:
    try:
        return catalogue.get_metric(section.metric, section.version)
    except UnknownMetricError:
        return None


def _cell_in(table: ScopedTable, month: str | None) -> CombinedCell | None:
    for cell in table.cells:
        if month is None or _key(cell, Dimension.MONTH) == month:
            return cell
    return None


def _half_width(table: ScopedTable, cell: CombinedCell, figure: str, value: float) -> float | None:
    """95% half-width of a ratio whose numerator carries documented noise (its standard
    deviation relative to the numerator), None where no noise is documented."""
    if table.disclosure is None:
        return None
    scales = {n.statistic: n.scale for n in table.disclosure.noise_scales}
    try:
        spec = catalogue.get_metric(table.metric, table.version)
    except UnknownMetricError:
        return None
    fig = next((f for f in spec.figures if f.name == figure), None)
    numerator = fig.inputs[0] if fig and fig.inputs else None
    if numerator is None or numerator not in scales:
        return None
    try:
        stat = cell.stat(numerator)
    except KeyError:
        return None
    if stat.value is None or isinstance(stat.value, Histogram) or float(stat.value) == 0:
        return None
    return Z95 * abs(value) * scales[numerator] / abs(float(stat.value))
