"""The round page's charts: the builders of :mod:`coordinator.charts` (shared with the printable
report) applied to one query's frame, for the figure (rate) the page shows."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go

from coordinator import charts as builders
from coordinator.dashboard.results import Section
from fedoversight.dimensions import Dimension

_CATEGORIES = (Dimension.SERVICE_CATEGORY, Dimension.SERVICE_CATEGORY_2)
#: Least height and left margin of a chart on the page (pixels).
PAGE_HEIGHT = 440
PAGE_LEFT_MARGIN = 90


def charts(section: Section, statistic: str) -> list[tuple[str, go.Figure]]:
    """The charts that fit the query's grouping, by kind: the trend by month with each
    carrier's line, the carriers compared (latest month when by month), the breakdown by
    service category."""
    frame, metric = section.frame, section.metric
    wanted: list[tuple[str, Callable[[], go.Figure]]] = []
    if Dimension.MONTH in section.group_by:
        wanted.append(("trend", lambda: builders.trend(frame, metric, statistic)))
    if any(d in section.group_by for d in _CATEGORIES):
        wanted.append(("breakdown", lambda: builders.breakdown(frame, metric, statistic)))
    wanted.append(("comparison", lambda: builders.comparison(frame, metric, statistic)))
    out = []
    for kind, build in wanted:
        try:
            fig = build()
        except ValueError:  # nothing of that shape in this query (e.g. every value withheld)
            continue
        out.append((kind, for_page(fig)))
    return out


def for_page(fig: go.Figure) -> go.Figure:
    """The figure with room on the page for its legend and axis titles (the page is wider
    than the report's column)."""
    fig.update_layout(height=max(fig.layout.height or 0, PAGE_HEIGHT))
    fig.update_layout(margin={"l": max(fig.layout.margin.l or 0, PAGE_LEFT_MARGIN)})
    return fig


def to_json(figure: go.Figure) -> str:
    """The figure as JSON safe inside a ``<script type="application/json">`` element."""
    text: str = figure.to_json()
    return text.replace("</", "<\\/")
