"""Charts of a round's results: Plotly figures built from the typed tidy frame of one round or
of several concatenated (:mod:`coordinator.frames`), for the web dashboard and the printable
report.

Every builder is a pure function of the frame: it reads the rows of one metric and statistic,
never the network, and returns a :class:`plotly.graph_objects.Figure` whose ``layout.meta``
names it (``{"chart": "trend" | "comparison" | "breakdown", "metric": ..., "statistic":
...}``) and whose traces say what they draw in their own ``meta`` (``{"role": ..., "scope": ...}``,
the role one of ``program`` and ``value`` (values), ``withheld``, ``no_value``, ``noise``
(error bars), ``legend`` (a legend entry) and ``key`` (the key to the marks)), so pages and
tests find them.

What each value may be, and how it is drawn:

- **withheld** (a carrier's disclosure control withheld it, or the statistics a figure rests
  on): no point; an ``x`` in the scope's colour with the hover text :data:`WITHHELD_TEXT` — in
  trends on a strip under the plot with a row per scope, elsewhere at the axis;
- **incomplete** (a program value leaving out withheld or unanswered carrier values): a
  diamond instead of a circle (a hatched bar in breakdowns);
- **unreliable** (a rate resting on too few events or members, NCHS data presentation
  standards): a hollow marker (a pale bar), with the reason in the hover text;
- **perturbed**: the value as released; comparisons draw ±1.96 × the documented noise standard
  deviation where it is published.

Where several rounds give a value for the same cell (a month run again as claims run out), the
latest round (the greatest round id; ids begin with the time they were issued) is drawn.
Dollars (``cents`` statistics) are drawn in dollars. Colours are the Okabe–Ito palette, safe
for the common colour-vision deficiencies; the program is black.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from coordinator.frames import PROGRAM
from fedoversight import catalogue
from fedoversight.dimensions import Dimension
from fedoversight.errors import UnknownMetricError

__all__ = [
    "CATEGORY_DIMENSIONS",
    "INCOMPLETE_TEXT",
    "NOISE_Z",
    "PALETTE",
    "PROGRAM",
    "PROGRAM_COLOUR",
    "UNRELIABLE_TEXT",
    "WITHHELD_TEXT",
    "breakdown",
    "comparison",
    "suggest",
    "trend",
]

#: Okabe & Ito's palette (without black, the program's colour), then Paul Tol's muted one for
#: tables with more categories than that.
PALETTE = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#F0E442",
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
)
PROGRAM_COLOUR = "#000000"
#: The error bars of comparisons: ±NOISE_Z standard deviations hold 95% of normal noise.
NOISE_Z = 1.96
#: The service-category dimensions (levels 1 and 2), the default of :func:`breakdown`.
CATEGORY_DIMENSIONS = (str(Dimension.SERVICE_CATEGORY), str(Dimension.SERVICE_CATEGORY_2))

WITHHELD_TEXT = "withheld by the carrier's disclosure control"
INCOMPLETE_TEXT = "incomplete: the program value leaves out withheld or unanswered carrier values"
UNRELIABLE_TEXT = (
    "unreliable: too small for a stable rate (fewer than 20 events or 30 members;"
    " NCHS data presentation standards)"
)
NOISE_TEXT = (
    "Error bars: ±1.96 × the standard deviation of the disclosure noise the value carries, as"
    " documented (docs/disclosure.md)."
)
NOT_PUBLISHED_TEXT = "the noise is not published (dollar noise under cell-key perturbation)"

_DIMENSIONS = frozenset(str(d) for d in Dimension)
_MONTH = str(Dimension.MONTH)
_NOTE_FONT = {"size": 11, "color": "#444444"}


# --- the public builders ----------------------------------------------------------------------


def trend(
    frame: pd.DataFrame,
    metric: str,
    statistic: str,
    *,
    where: Mapping[str, object] | None = None,
) -> go.Figure:
    """``statistic`` of ``metric`` by month: the program's line and each carrier's.

    Cells with another dimension than the month are left out unless ``where`` fixes it (e.g.
    ``{"state": "CA"}``). Raises :class:`ValueError` when no monthly cell is left.
    """
    rows = _select(frame, metric, statistic, keep=(_MONTH,), where=where)
    rows = rows[rows[_MONTH].notna()] if _MONTH in rows.columns else rows.iloc[0:0]
    if rows.empty:
        raise ValueError(f"no monthly cells of {metric} {statistic} in the frame")
    rows = rows.sort_values(_MONTH)
    unit = _unit(rows)
    fig = go.Figure()
    colours = _scope_colours(frame)
    has = _Flags()
    strip: list[str] = []
    for scope in _scopes(rows):
        part = rows[rows["scope"] == scope]
        colour = colours[scope]
        name = "Program" if scope == PROGRAM else scope
        values = _display_values(part)
        has.add(part)
        line = {"color": colour, "width": 3 if scope == PROGRAM else 1.5}
        size = 9 if scope == PROGRAM else 7
        # The legend draws a trace's first marker: its entry is a trace of its own, plain.
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines+markers",
                name=name,
                legendgroup=scope,
                line=line,
                marker={"symbol": "circle", "size": size, "color": colour},
                hoverinfo="skip",
                meta={"role": "legend", "scope": scope},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=list(part[_MONTH]),
                y=values,
                mode="lines+markers",
                name=name,
                legendgroup=scope,
                showlegend=False,
                connectgaps=False,
                line=line,
                marker={
                    "symbol": _symbols(part),
                    "size": size,
                    "color": colour,
                    "line": {"color": colour, "width": 1.5},
                },
                hovertext=_hover(part, unit, label=lambda r: f"{r['scope']} · {_month(r)}"),
                hoverinfo="text",
                meta={"role": PROGRAM if scope == PROGRAM else "value", "scope": scope},
            )
        )
        withheld = part[_withheld(part)]
        if not withheld.empty:
            # A strip under the plot, a row per carrier: no mark hides another or a value.
            strip.append(name)
            fig.add_trace(
                go.Scatter(
                    x=list(withheld[_MONTH]),
                    y=[name] * len(withheld),
                    yaxis="y2",
                    mode="markers",
                    name=f"{name} withheld",
                    legendgroup=scope,
                    showlegend=False,
                    cliponaxis=False,
                    marker={"symbol": "x", "size": 10, "color": colour},
                    hovertext=[f"{scope} · {_month(r)}: {WITHHELD_TEXT}" for _, r in _it(withheld)],
                    hoverinfo="text",
                    meta={"role": "withheld", "scope": scope},
                )
            )
    _add_keys(fig, has)
    entries = len(_scopes(rows)) + sum((has.withheld, has.incomplete, has.unreliable))
    # Room for every legend entry beside the plot (a scrolling legend does not print), and for
    # the strip of withheld values under it.
    plot = max(300, 28 * entries) + 20 * len(strip)
    fig.update_layout(
        xaxis={"title": {"text": "month"}, "type": "date", "tickformat": "%Y-%m", "dtick": "M1"},
        height=150 + 18 * len(has.notes()) + plot,
    )
    if strip:
        _withheld_strip(fig, strip, plot)
    _finish(
        fig,
        "trend",
        metric,
        statistic,
        title=f"{_title(metric, statistic)} by month{_where_text(where)}",
        y_title=_axis_title(metric, statistic, unit),
        notes=has.notes(),
    )
    return fig


def comparison(
    frame: pd.DataFrame,
    metric: str,
    statistic: str,
    month: object = None,
    *,
    where: Mapping[str, object] | None = None,
) -> go.Figure:
    """Carriers ranked by ``statistic`` of ``metric``, highest first, with error bars of
    ±1.96 × the documented noise standard deviation where it is published; withheld carriers
    listed below the ranking as withheld, unreliable values hollow; the program's value a
    dashed line.

    ``month`` (anything :class:`pandas.Timestamp` reads, e.g. ``"2026-03"``) picks a month of a
    monthly table; without it the period-wide cells are used, or the latest month when the
    table is by month. Raises :class:`ValueError` when the frame has no such carrier cells.
    """
    rows = _select(frame, metric, statistic, keep=(_MONTH,), where=where)
    rows, when = _one_month(rows, month)
    carriers = rows[rows["scope"] != PROGRAM]
    if carriers.empty:
        raise ValueError(f"no carrier cells of {metric} {statistic} in the frame")
    unit = _unit(carriers)
    scale = _scale(carriers)
    withheld_mask = _withheld(carriers)
    no_value = carriers["value"].isna() & ~withheld_mask
    ranked = carriers[~withheld_mask & ~no_value].sort_values(
        ["value", "scope"], ascending=[False, True]
    )
    colours = _scope_colours(frame)
    has = _Flags()
    has.add(carriers)
    fig = go.Figure()
    if not ranked.empty:
        sd = ranked["noise_sd"].astype("Float64")
        unpublished = bool(sd.isna().any())
        noisy = ranked[sd.fillna(0) > 0]
        if not noisy.empty:
            # Error bars on a trace of their own under the points: only where noise is
            # documented (a zero-length bar would show through a hollow marker).
            fig.add_trace(
                go.Scatter(
                    x=_display_values(noisy),
                    y=list(noisy["scope"]),
                    mode="markers",
                    name="noise",
                    showlegend=False,
                    marker={"size": 1, "opacity": 0},
                    error_x={
                        "type": "data",
                        "array": [NOISE_Z * float(v) * scale for v in noisy["noise_sd"]],
                        "visible": True,
                        "color": "#555555",
                    },
                    hoverinfo="skip",
                    meta={"role": "noise", "scope": list(noisy["scope"])},
                )
            )
        fig.add_trace(
            go.Scatter(
                x=_display_values(ranked),
                y=list(ranked["scope"]),
                mode="markers",
                name="carriers",
                showlegend=False,
                marker={
                    "symbol": _symbols(ranked),
                    "size": 11,
                    "color": [colours[s] for s in ranked["scope"]],
                    "line": {"color": [colours[s] for s in ranked["scope"]], "width": 2},
                },
                hovertext=_hover(ranked, unit, label=lambda r: str(r["scope"]), noise=True),
                hoverinfo="text",
                meta={"role": "value", "scope": list(ranked["scope"])},
            )
        )
    else:
        unpublished = False
    withheld = carriers[withheld_mask].sort_values("scope")
    empty = carriers[no_value].sort_values("scope")
    for part, role, text, hover in (
        (withheld, "withheld", "withheld", WITHHELD_TEXT),
        (empty, "no_value", "no value", "no value (nothing to divide by)"),
    ):
        if part.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=[0.012] * len(part),
                y=list(part["scope"]),
                xaxis="x2",
                mode="markers+text",
                name=text,
                showlegend=False,
                cliponaxis=False,
                text=[text] * len(part),
                textposition="middle right",
                marker={
                    "symbol": "x" if role == "withheld" else "circle-open-dot",
                    "size": 11,
                    "color": [colours[s] for s in part["scope"]],
                },
                hovertext=[f"{s}: {hover}" for s in part["scope"]],
                hoverinfo="text",
                meta={"role": role, "scope": list(part["scope"])},
            )
        )
    program = rows[(rows["scope"] == PROGRAM) & rows["value"].notna()]
    if not program.empty:
        value = _display_values(program)[0]
        assert value is not None
        fig.add_vline(x=value, line={"color": PROGRAM_COLOUR, "dash": "dash", "width": 1.5})
        fig.add_annotation(
            x=value,
            y=1.0,
            yref="paper",
            yanchor="bottom",
            showarrow=False,
            text=f"program {_format(value, unit)}",
            font={"size": 11},
        )
    order = [*ranked["scope"], *withheld["scope"], *empty["scope"]]
    fig.update_layout(
        yaxis={
            "categoryorder": "array",
            "categoryarray": order,
            "autorange": "reversed",
            "type": "category",
        },
        xaxis2={"overlaying": "x", "range": [0, 1], "visible": False, "fixedrange": True},
    )
    notes = [NOISE_TEXT]
    if unpublished:
        notes.append(f"No error bar where {NOT_PUBLISHED_TEXT}.")
    notes += has.notes()
    fig.update_layout(height=150 + 18 * len(notes) + max(180, 34 * len(order)))
    when_text = f", {when}" if when else ""
    _finish(
        fig,
        "comparison",
        metric,
        statistic,
        title=f"{_title(metric, statistic)} by carrier{when_text}{_where_text(where)}",
        x_title=_axis_title(metric, statistic, unit),
        notes=notes,
    )
    fig.update_layout(meta={**dict(fig.layout.meta), "month": when or None})
    return fig


def breakdown(
    frame: pd.DataFrame,
    metric: str,
    statistic: str,
    dimension: str | None = None,
    *,
    where: Mapping[str, object] | None = None,
) -> go.Figure:
    """The program's ``statistic`` of ``metric`` by ``dimension`` (by default the service
    category the table has, level 1 or 2): ranked bars, or, when the table is also by month,
    bars by month stacked by category (categories of cost by service category add up to the
    total). Raises :class:`ValueError` when the frame has no such program cells.
    """
    dim = dimension or _category_dimension(frame, metric, statistic)
    if dim is None:
        raise ValueError(f"{metric} {statistic} has no service category in the frame")
    rows = _select(frame, metric, statistic, keep=(dim, _MONTH), where=where)
    rows = rows[(rows["scope"] == PROGRAM) & rows[dim].notna()] if dim in rows.columns else rows
    if rows.empty or dim not in rows.columns:
        raise ValueError(f"no program cells of {metric} {statistic} by {dim} in the frame")
    unit = _unit(rows)
    has = _Flags()
    has.add(rows)
    fig = go.Figure()
    months = sorted(rows[_MONTH].dropna().unique()) if _MONTH in rows.columns else []
    if len(months) > 1:
        _stacked(fig, rows, dim, unit)
        chart_title = f"{_title(metric, statistic)} by {dim} and month"
        _finish(
            fig,
            "breakdown",
            metric,
            statistic,
            title=chart_title + _where_text(where),
            y_title=_axis_title(metric, statistic, unit),
            notes=has.notes(),
        )
    else:
        _ranked_bars(fig, rows, dim, unit)
        when = f", {pd.Timestamp(months[0]):%Y-%m}" if months else ""
        _finish(
            fig,
            "breakdown",
            metric,
            statistic,
            title=f"{_title(metric, statistic)} by {dim}{when}{_where_text(where)}",
            x_title=_axis_title(metric, statistic, unit),
            notes=has.notes(),
        )
    fig.update_layout(meta={**dict(fig.layout.meta), "dimension": dim})
    return fig


def suggest(frame: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """The charts that apply to the frame, each with its title, metric by metric in the
    frame's order: for each figure (rate) a metric has (or each statistic, when it has none),
    a breakdown where the table is by service category (or by another dimension and not by
    month), a trend where it is by month over more than one month, and a carrier comparison
    where carriers have values (the latest month)."""
    out: list[tuple[str, go.Figure]] = []
    for metric in pd.unique(frame["metric"]):
        rows = frame[frame["metric"] == metric]
        figures = rows[rows["kind"] == "figure"]
        chosen = figures if not figures.empty else rows
        dims = [
            c
            for c in rows.columns
            if c in _DIMENSIONS and c != str(Dimension.CARRIER) and rows[c].notna().any()
        ]
        for statistic in pd.unique(chosen["statistic"]):
            for build in _builders(str(metric), str(statistic), dims, rows):
                try:
                    fig = build()
                except ValueError:
                    continue
                out.append((str(fig.layout.title.text), fig))
    return out


# --- what suggest picks -----------------------------------------------------------------------


def _builders(
    metric: str, statistic: str, dims: Sequence[str], rows: pd.DataFrame
) -> list[Callable[[], go.Figure]]:
    others = [d for d in dims if d != _MONTH]
    categories = [d for d in others if d in CATEGORY_DIMENSIONS]
    if categories:
        return [functools.partial(breakdown, rows, metric, statistic, categories[0])]
    if others:
        if _MONTH in dims:
            return []
        return [functools.partial(breakdown, rows, metric, statistic, others[0])]
    builds: list[Callable[[], go.Figure]] = []
    if _MONTH in dims and rows[_MONTH].nunique() > 1:
        builds.append(functools.partial(trend, rows, metric, statistic))
    if (rows["scope"] != PROGRAM).any():
        builds.append(functools.partial(comparison, rows, metric, statistic))
    return builds


# --- selecting rows ---------------------------------------------------------------------------


def _select(
    frame: pd.DataFrame,
    metric: str,
    statistic: str,
    *,
    keep: Sequence[str],
    where: Mapping[str, object] | None,
) -> pd.DataFrame:
    """Rows of one metric and statistic whose dimensions other than ``keep`` and ``where`` are
    empty, one per scope and cell: the latest round's."""
    rows = frame[(frame["metric"] == metric) & (frame["statistic"] == statistic)]
    where = dict(where or {})
    for name, wanted in where.items():
        if name not in rows.columns:
            return rows.iloc[0:0]
        column = rows[name]
        if name == _MONTH:
            rows = rows[column == pd.Timestamp(str(wanted))]
        else:
            rows = rows[column.astype("string") == str(wanted)]
    dims = [c for c in rows.columns if c in _DIMENSIONS]
    for d in dims:
        if d not in keep and d not in where:
            rows = rows[rows[d].isna()]
    key = ["scope", *(d for d in dims if d in keep)]
    if "round_id" in rows.columns and rows["round_id"].nunique() > 1:
        rows = rows.sort_values("round_id", kind="stable")
        rows = rows.drop_duplicates(subset=key, keep="last")
    return rows


def _one_month(rows: pd.DataFrame, month: object) -> tuple[pd.DataFrame, str]:
    if _MONTH not in rows.columns:
        return rows, ""
    if month is not None:
        stamp = pd.Timestamp(str(month)) if not isinstance(month, pd.Timestamp) else month
        stamp = stamp.to_period("M").to_timestamp()
        return rows[rows[_MONTH] == stamp], f"{stamp:%Y-%m}"
    period_wide = rows[rows[_MONTH].isna()]
    if not period_wide.empty:
        return period_wide, _period(period_wide)
    months = rows[_MONTH].dropna()
    if months.empty:
        return rows, ""
    latest = months.max()
    return rows[rows[_MONTH] == latest], f"{pd.Timestamp(latest):%Y-%m}"


def _period(rows: pd.DataFrame) -> str:
    if "period" in rows.columns:
        periods = rows["period"].dropna().unique()
        if len(periods) == 1:
            return str(periods[0])
    return ""


def _category_dimension(frame: pd.DataFrame, metric: str, statistic: str) -> str | None:
    rows = frame[(frame["metric"] == metric) & (frame["statistic"] == statistic)]
    for d in CATEGORY_DIMENSIONS:
        if d in rows.columns and rows[d].notna().any():
            return d
    return None


def _scopes(rows: pd.DataFrame) -> list[str]:
    scopes = sorted({str(s) for s in rows["scope"]} - {PROGRAM})
    return ([PROGRAM] if (rows["scope"] == PROGRAM).any() else []) + scopes


def _scope_colours(frame: pd.DataFrame) -> dict[str, str]:
    """Each carrier's colour, the same in every chart of the frame."""
    carriers = sorted({str(s) for s in frame["scope"].dropna()} - {PROGRAM})
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(carriers)}
    colours[PROGRAM] = PROGRAM_COLOUR
    return colours


# --- values and their marks -------------------------------------------------------------------


def _it(rows: pd.DataFrame) -> list[tuple[object, pd.Series]]:
    return list(rows.iterrows())


def _flag(rows: pd.DataFrame, column: str) -> pd.Series:
    if column not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows[column].astype("boolean").fillna(False).astype(bool)


def _withheld(rows: pd.DataFrame) -> pd.Series:
    """Values without a value because a carrier's disclosure control withheld them or the
    statistics they rest on (a figure of withheld inputs)."""
    missing = rows["value"].isna()
    return _flag(rows, "withheld") | (missing & _flag(rows, "incomplete"))


def _unit(rows: pd.DataFrame) -> str:
    kinds = set(rows["kind"].dropna()) if "kind" in rows.columns else set()
    return "dollars" if kinds == {"cents"} else ""


def _scale(rows: pd.DataFrame) -> float:
    return 0.01 if _unit(rows) == "dollars" else 1.0


def _display_values(rows: pd.DataFrame) -> list[float | None]:
    """The values to draw: dollars for cents (from the exact integer where there is one)."""
    scale = _scale(rows)
    out: list[float | None] = []
    exact = rows["value_int"] if "value_int" in rows.columns else None
    for i, value in enumerate(rows["value"]):
        if scale != 1.0 and exact is not None and not pd.isna(exact.iloc[i]):
            out.append(int(exact.iloc[i]) / 100)
        elif pd.isna(value) or not math.isfinite(float(value)):
            out.append(None)
        else:
            out.append(float(value) * scale)
    return out


def _symbols(rows: pd.DataFrame) -> list[str]:
    incomplete = _flag(rows, "incomplete")
    unreliable = _flag(rows, "unreliable")
    return [
        ("diamond" if inc else "circle") + ("-open" if unr else "")
        for inc, unr in zip(incomplete, unreliable, strict=True)
    ]


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "no value"
    if unit == "dollars":
        return f"${value:,.2f}"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"


def _month(row: pd.Series) -> str:
    value = row.get(_MONTH)
    return "" if value is None or pd.isna(value) else f"{pd.Timestamp(value):%Y-%m}"


def _hover(
    rows: pd.DataFrame,
    unit: str,
    *,
    label: object,
    noise: bool = False,
) -> list[str]:
    assert callable(label)
    scale = _scale(rows)
    values = _display_values(rows)
    out: list[str] = []
    for (_, row), value in zip(rows.iterrows(), values, strict=True):
        lines = [f"{label(row)}: {_format(value, unit)}"]
        sd = row.get("noise_sd")
        known = sd is not None and not pd.isna(sd)
        if known and float(sd) > 0:
            # Perturbed, or an incomplete sum of perturbed values.
            lines.append(f"perturbed; noise sd {_format(float(sd) * scale, unit)}")
            if noise:
                lines.append(f"±1.96 sd: ±{_format(NOISE_Z * float(sd) * scale, unit)}")
        elif not known and row.get("status") == "perturbed":
            lines.append(f"perturbed; {NOT_PUBLISHED_TEXT}")
        if bool(_truthy(row.get("withheld"))):
            lines.append(WITHHELD_TEXT)
        if bool(_truthy(row.get("incomplete"))):
            missing = row.get("missing_carriers")
            left = "" if missing is None or pd.isna(missing) else f" ({int(missing)} carrier(s))"
            lines.append(INCOMPLETE_TEXT + left)
        if bool(_truthy(row.get("unreliable"))):
            reason = row.get("unreliable_reason")
            extra = "" if reason is None or pd.isna(reason) else f": {reason}"
            lines.append("unreliable" + extra + " (NCHS data presentation standards)")
        out.append("<br>".join(lines))
    return out


def _truthy(value: object) -> bool:
    return value is not None and not pd.isna(value) and bool(value)


class _Flags:
    """Which marks a chart draws, for its key and notes."""

    def __init__(self) -> None:
        self.withheld = False
        self.incomplete = False
        self.unreliable = False

    def add(self, rows: pd.DataFrame) -> None:
        self.withheld |= bool(_withheld(rows).any())
        self.incomplete |= bool(_flag(rows, "incomplete").any())
        self.unreliable |= bool(_flag(rows, "unreliable").any())

    def notes(self) -> list[str]:
        notes = []
        if self.withheld:
            notes.append(f"×: {WITHHELD_TEXT}.")
        if self.incomplete:
            notes.append(f"◆ / hatched: {INCOMPLETE_TEXT}.")
        if self.unreliable:
            notes.append(f"Hollow / pale: {UNRELIABLE_TEXT}.")
        return notes


def _withheld_strip(fig: go.Figure, rows: Sequence[str], plot: float) -> None:
    """The y axis of the withheld marks: a row per scope under the values' plot, the month axis
    at its foot."""
    share = min(0.4, (20 * len(rows) + 10) / plot)
    fig.update_layout(
        yaxis={"domain": [share + 0.06, 1.0]},
        yaxis2={
            "domain": [0.0, share],
            "type": "category",
            "categoryorder": "array",
            "categoryarray": list(rows),
            "autorange": "reversed",
            "showgrid": True,
            "fixedrange": True,
            "tickfont": {"size": 10},
            "title": {"text": "withheld", "font": {"size": 11}},
        },
        xaxis={"anchor": "y2"},
    )


def _add_keys(fig: go.Figure, has: _Flags) -> None:
    """Legend entries explaining the marks the chart draws."""
    keys = []
    if has.withheld:
        keys.append(("x", "withheld"))
    if has.incomplete:
        keys.append(("diamond", "incomplete (program)"))
    if has.unreliable:
        keys.append(("circle-open", "unreliable"))
    for symbol, name in keys:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=name,
                legendgroup="key",
                marker={"symbol": symbol, "size": 9, "color": "#555555"},
                hoverinfo="skip",
                meta={"role": "key", "key": name.split()[0]},
            )
        )


# --- bars ---------------------------------------------------------------------------------------


def _ranked_bars(fig: go.Figure, rows: pd.DataFrame, dim: str, unit: str) -> None:
    withheld_mask = _withheld(rows) | rows["value"].isna()
    ranked = rows[~withheld_mask].sort_values(["value", dim], ascending=[False, True])
    withheld = rows[withheld_mask].sort_values(dim)
    if not ranked.empty:
        unreliable = list(_flag(ranked, "unreliable"))
        fig.add_trace(
            go.Bar(
                x=_display_values(ranked),
                y=[str(v) for v in ranked[dim]],
                orientation="h",
                name="program",
                showlegend=False,
                marker={
                    "color": [PALETTE[3]] * len(ranked),
                    "opacity": [0.35 if u else 1.0 for u in unreliable],
                    "line": {"color": PALETTE[3], "width": 1.5},
                    "pattern": {"shape": ["/" if i else "" for i in _flag(ranked, "incomplete")]},
                },
                hovertext=_hover(ranked, unit, label=lambda r: str(r[dim])),
                hoverinfo="text",
                meta={"role": "value", "scope": PROGRAM},
            )
        )
    if not withheld.empty:
        fig.add_trace(
            go.Scatter(
                x=[0.012] * len(withheld),
                y=[str(v) for v in withheld[dim]],
                xaxis="x2",
                mode="markers+text",
                name="withheld",
                showlegend=False,
                cliponaxis=False,
                text=["withheld"] * len(withheld),
                textposition="middle right",
                marker={"symbol": "x", "size": 11, "color": "#555555"},
                hovertext=[f"{v}: {WITHHELD_TEXT}" for v in withheld[dim]],
                hoverinfo="text",
                meta={"role": "withheld", "scope": PROGRAM},
            )
        )
    order = [str(v) for v in (*ranked[dim], *withheld[dim])]
    fig.update_layout(
        yaxis={
            "categoryorder": "array",
            "categoryarray": order,
            "autorange": "reversed",
            "type": "category",
        },
        xaxis2={"overlaying": "x", "range": [0, 1], "visible": False, "fixedrange": True},
        height=150 + 18 * 3 + max(180, 30 * len(order)),
    )


def _stacked(fig: go.Figure, rows: pd.DataFrame, dim: str, unit: str) -> None:
    categories = sorted({str(v) for v in rows[dim]})
    has = _Flags()
    for i, category in enumerate(categories):
        part = rows[rows[dim].astype("string") == category].sort_values(_MONTH)
        has.add(part)
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Bar(
                x=list(part[_MONTH]),
                y=_display_values(part),
                name=category,
                marker={
                    "color": colour,
                    "opacity": [0.35 if u else 1.0 for u in _flag(part, "unreliable")],
                    "pattern": {"shape": ["/" if f else "" for f in _flag(part, "incomplete")]},
                },
                hovertext=_hover(part, unit, label=lambda r: f"{r[dim]} · {_month(r)}"),
                hoverinfo="text",
                meta={"role": "value", "scope": PROGRAM, "category": category},
            )
        )
    strip: list[str] = []
    for i, category in enumerate(categories):
        part = rows[rows[dim].astype("string") == category]
        withheld = part[_withheld(part)]
        if withheld.empty:
            continue
        strip.append(category)
        fig.add_trace(
            go.Scatter(
                x=list(withheld[_MONTH]),
                y=[category] * len(withheld),
                yaxis="y2",
                mode="markers",
                name=f"{category} withheld",
                showlegend=False,
                marker={"symbol": "x", "size": 10, "color": PALETTE[i % len(PALETTE)]},
                hovertext=[f"{category} · {_month(r)}: {WITHHELD_TEXT}" for _, r in _it(withheld)],
                hoverinfo="text",
                meta={"role": "withheld", "scope": PROGRAM, "category": category},
            )
        )
    plot = max(300, 24 * (len(categories) + 1)) + 20 * len(strip)
    fig.update_layout(
        barmode="stack",
        xaxis={"title": {"text": "month"}, "type": "date", "tickformat": "%Y-%m", "dtick": "M1"},
        height=150 + 18 * len(has.notes()) + plot,
    )
    if strip:
        _withheld_strip(fig, strip, plot)


# --- titles, notes and layout -------------------------------------------------------------------


def _title(metric: str, statistic: str) -> str:
    try:
        spec = catalogue.get_metric(metric)
    except UnknownMetricError:
        return f"{metric}: {statistic}"
    return f"{spec.title}: {statistic}"


def _axis_title(metric: str, statistic: str, unit: str) -> str:
    try:
        spec = catalogue.get_metric(metric)
    except UnknownMetricError:
        return statistic + (f" ({unit})" if unit else "")
    descriptions = {f.name: f.description for f in spec.figures}
    descriptions.update({s.name: s.description for s in spec.statistics})
    text = descriptions.get(statistic, statistic)
    return str(text) + (f" ({unit})" if unit and unit not in text else "")


def _where_text(where: Mapping[str, object] | None) -> str:
    if not where:
        return ""
    return " (" + ", ".join(f"{k} {v}" for k, v in where.items()) + ")"


def _finish(
    fig: go.Figure,
    chart: str,
    metric: str,
    statistic: str,
    *,
    title: str,
    notes: Sequence[str],
    x_title: str | None = None,
    y_title: str | None = None,
) -> None:
    lines = len(notes)
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        meta={"chart": chart, "metric": metric, "statistic": statistic},
        template="plotly_white",
        font={"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 13},
        hoverlabel={"align": "left"},
        legend={"orientation": "v", "x": 1.02, "y": 1.0},
        margin={"l": 70, "r": 30, "t": 70, "b": 80 + 18 * lines},
    )
    if x_title is not None:
        fig.update_layout(xaxis_title_text=x_title)
    if y_title is not None:
        fig.update_layout(yaxis_title_text=y_title)
    if notes:
        fig.add_annotation(
            text="<br>".join(notes),
            xref="paper",
            yref="paper",
            x=0.0,
            y=0.0,
            yshift=-(60 + 18 * lines),
            xanchor="left",
            yanchor="bottom",
            align="left",
            showarrow=False,
            font=_NOTE_FONT,
        )
