"""A round's tables as one typed tidy DataFrame: what analysts, the dashboard and the report
read.

One row per scope (``program``, or a carrier id), cell and statistic or figure, as the tidy
export (:func:`coordinator.export.tidy_rows`, histograms left out), but typed — strings as
``string``, counts as nullable ``Int64``, values as ``Float64`` with exact integers beside them
in ``value_int``, months as datetimes — and with what a reader needs to judge each value:

- ``withheld`` and ``incomplete``: a carrier's disclosure control withheld it, or a program
  value leaves out a withheld or unanswered carrier value (``missing_*`` say how much);
- ``noise_sd``: the standard deviation of the disclosure noise the value carries, as the
  carriers' nodes document it (see ``docs/disclosure.md``): zero for an exact value, √V per
  carrier for a cell-key perturbed count, the Gaussian scale under differential privacy,
  summed in variance over the carriers of a program value, and carried through a figure's
  formula to first order. It is NA where the noise is not published: a dollar total moves in
  proportion to its largest member's contribution, which only the node knows;
- ``unreliable``: a figure (a rate) resting on too few events or people for a stable rate, as
  in the NCHS data presentation standards: computed from fewer than
  :data:`UNRELIABLE_MIN_EVENTS` events or people (a relative standard error above about 23%),
  or over a population of fewer than :data:`UNRELIABLE_MIN_MEMBERS` members. This is not
  withholding: the value is released, but too small to compare; ``unreliable_reason`` says
  which count is short.

``frame.attrs`` describes the round (id, period, state, each carrier asked and its outcome,
``complete`` when every carrier answered and no value is withheld).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from coordinator.combine import MONTHS_IN_CELL, PROGRAM_SCOPE, ScopedTable, months_in_cell
from coordinator.export import INCOMPLETE, RoundInfo
from fedoversight import catalogue
from fedoversight.catalogue import MetricSpec, StatKind
from fedoversight.dimensions import Dimension
from fedoversight.domain import CellKey, DisclosureSummary, Method, Status, StatValue
from fedoversight.errors import UnknownMetricError
from fedoversight.histogram import Histogram
from fedoversight.periods import Period

if TYPE_CHECKING:
    from coordinator.client import RoundOutcome

#: The scope of values combined over every carrier that answered.
PROGRAM = PROGRAM_SCOPE
#: NCHS data presentation standards: a rate on fewer events has a relative standard error
#: above about 23% (1/√20) and is flagged unreliable.
UNRELIABLE_MIN_EVENTS = 20
#: ... and a rate or proportion over fewer people (the standards' minimum sample size).
UNRELIABLE_MIN_MEMBERS = 30

#: ``kind`` of a figure row (statistic rows carry their catalogue kind).
FIGURE = "figure"
PERTURBED = str(Status.PERTURBED)
WITHHELD = str(Status.WITHHELD)
RELEASED = str(Status.RELEASED)

_HEAD = ("round_id", "period", "metric", "metric_version", "scope")
_TAIL = (
    "statistic",
    "kind",
    "value",
    "value_int",
    "status",
    "withheld",
    "incomplete",
    "noise_sd",
    "unreliable",
    "unreliable_reason",
    "missing_carriers",
    "missing_at_most",
    "missing_members_at_most",
    "carriers_asked",
    "carriers_answered",
)
_DTYPES: dict[str, str] = {
    "round_id": "string",
    "period": "string",
    "metric": "string",
    "metric_version": "Int64",
    "scope": "string",
    "statistic": "string",
    "kind": "string",
    "value": "Float64",
    "value_int": "Int64",
    "status": "string",
    "withheld": "boolean",
    "incomplete": "boolean",
    "noise_sd": "Float64",
    "unreliable": "boolean",
    "unreliable_reason": "string",
    "missing_carriers": "Int64",
    "missing_at_most": "Int64",
    "missing_members_at_most": "Int64",
    "carriers_asked": "Int64",
    "carriers_answered": "Int64",
}
#: Key of a value across scopes: metric, version, cell key (sorted), statistic.
_ValueKey = tuple[str, int, CellKey, str]


def columns(dimensions: Iterable[Dimension]) -> tuple[str, ...]:
    """The frame's columns for tables grouped by ``dimensions`` (in catalogue order)."""
    used = set(dimensions)
    return (*_HEAD, *(str(d) for d in Dimension if d in used), *_TAIL)


def dtype_of(column: str) -> str:
    """The dtype of a column of the frame."""
    if column == str(Dimension.MONTH):
        return "datetime64[ns]"
    return _DTYPES.get(column, "string")


def round_frame(outcome: RoundOutcome) -> pd.DataFrame:
    """The typed tidy frame of a finished (or open) round as the operator API returned it."""
    frame = frame_of(outcome.tables, outcome.info())
    frame.attrs["late"] = list(outcome.late)
    return frame


def frame_of(tables: Sequence[ScopedTable], info: RoundInfo | None = None) -> pd.DataFrame:
    """The typed tidy frame of ``tables``, described by ``info``."""
    info = info or RoundInfo()
    period = Period.parse(info.period) if info.period else None
    variances = _carrier_variances(tables)
    rows: list[dict[str, object]] = []
    for table in tables:
        rows.extend(_table_rows(table, info, period, variances))
    cols = columns(d for t in tables for d in t.group_by)
    frame = _typed(rows, cols)
    frame.attrs.update(_attrs(info, frame))
    return frame


def concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Frames of several rounds as one, dtypes kept (``round_id`` tells the rounds apart; the
    rounds' ``attrs`` are dropped)."""
    if not frames:
        return _typed([], columns(()))
    dims = {c for f in frames for c in f.columns if c not in _DTYPES}
    cols = columns(Dimension(d) for d in dims)
    parts = []
    for f in frames:
        part = f.copy()
        part.attrs = {}
        for c in cols:
            if c not in part.columns:
                part[c] = pd.Series(pd.NA, index=part.index, dtype=dtype_of(c))
        parts.append(part[list(cols)])
    out = pd.concat(parts, ignore_index=True)
    out.attrs = {}
    return out.astype({c: dtype_of(c) for c in cols})


# --- rows -------------------------------------------------------------------------------------


def _spec(table: ScopedTable) -> MetricSpec | None:
    try:
        return catalogue.get_metric(table.metric, table.version)
    except UnknownMetricError:
        return None


def _sorted_key(key: CellKey) -> CellKey:
    return tuple(sorted(key))


def _stat_sd(
    stat: StatValue, kind: StatKind | None, disclosure: DisclosureSummary | None
) -> float | None:
    """The noise's standard deviation in one carrier's value (None: not published)."""
    if stat.status is Status.WITHHELD or stat.value is None:
        return 0.0
    if stat.status is Status.RELEASED:
        return 0.0
    if disclosure is None:
        return None
    if disclosure.method is Method.DIFFERENTIAL_PRIVACY:
        for scale in disclosure.noise_scales:
            if scale.statistic == stat.name:
                return float(scale.scale)
        return None
    if (
        disclosure.method is Method.CELL_KEY
        and disclosure.perturbation is not None
        and kind in (StatKind.MEMBERS, StatKind.COUNT)
    ):
        return math.sqrt(disclosure.perturbation.count_variance)
    return None


def _carrier_variances(tables: Sequence[ScopedTable]) -> dict[_ValueKey, list[float | None]]:
    """Each carrier value's noise variance (None: not published), by value key."""
    out: dict[_ValueKey, list[float | None]] = {}
    for table in tables:
        if table.scope == PROGRAM:
            continue
        spec = _spec(table)
        kinds = {s.name: s.kind for s in spec.statistics} if spec else {}
        for cell in table.cells:
            key = _sorted_key(cell.key)
            for stat in cell.stats:
                if stat.status is Status.WITHHELD or stat.value is None:
                    continue
                sd = _stat_sd(stat, kinds.get(stat.name), table.disclosure)
                out.setdefault((table.metric, table.version, key, stat.name), []).append(
                    None if sd is None else sd * sd
                )
    return out


def _program_sd(
    table: ScopedTable,
    key: CellKey,
    stat: StatValue,
    variances: Mapping[_ValueKey, list[float | None]],
) -> float | None:
    if stat.value is None:
        return None
    if stat.status is Status.RELEASED:
        return 0.0
    parts = variances.get((table.metric, table.version, key, stat.name))
    if not parts or any(v is None for v in parts):
        return None
    return math.sqrt(sum(v for v in parts if v is not None))


def _figure_sd(
    spec: MetricSpec,
    name: str,
    values: Mapping[str, object],
    sds: Mapping[str, float | None],
) -> float | None:
    """A figure's noise carried through its formula to first order: the root of the summed
    squares of the change one standard deviation of each input makes."""
    fig = next((f for f in spec.figures if f.name == name), None)
    if fig is None:
        return None
    needed = [n for n in fig.inputs if n != MONTHS_IN_CELL]
    if any(n not in values for n in needed):
        return None
    try:
        base = float(fig.formula(values))
    except (ArithmeticError, ValueError):
        return None
    if not math.isfinite(base):
        return None
    total = 0.0
    for n in needed:
        sd = sds.get(n)
        if sd is None or isinstance(values[n], Histogram):
            return None
        if sd == 0.0:
            continue
        moved = dict(values)
        moved[n] = float(values[n]) + sd  # type: ignore[arg-type]
        try:
            changed = float(fig.formula(moved))
        except (ArithmeticError, ValueError):
            return None
        if not math.isfinite(changed):
            return None
        total += (changed - base) ** 2
    return math.sqrt(total)


def _unreliable(spec: MetricSpec, name: str, values: Mapping[str, object]) -> str | None:
    """Why a figure is too small for a stable rate (None: it is not): a count of events or
    people it is computed from is below :data:`UNRELIABLE_MIN_EVENTS`, or the population it
    is over (the largest count of people among its inputs and the people they rest on) is
    below :data:`UNRELIABLE_MIN_MEMBERS`."""
    fig = next((f for f in spec.figures if f.name == name), None)
    if fig is None:
        return None
    stats = {s.name: s for s in spec.statistics}
    people: set[str] = set()
    for n in fig.inputs:
        s = stats.get(n)
        if s is None:
            continue
        if s.kind is StatKind.MEMBERS:
            people.add(n)
        elif s.rests_on is not None:
            people.add(s.rests_on)
        v = values.get(n)
        counted = s.kind in (StatKind.COUNT, StatKind.MEMBERS)
        if counted and isinstance(v, int | float) and v < UNRELIABLE_MIN_EVENTS:
            return f"{n} below {UNRELIABLE_MIN_EVENTS}"
    sizes = [(v, n) for n in people if isinstance(v := values.get(n), int | float)]
    if sizes:
        largest, label = max(sizes)
        if largest < UNRELIABLE_MIN_MEMBERS:
            return f"{label} below {UNRELIABLE_MIN_MEMBERS}"
    return None


def _missing(stat_missing: Any) -> dict[str, object]:
    if stat_missing is None:
        return {}
    return {
        "missing_carriers": stat_missing.carriers,
        "missing_at_most": stat_missing.at_most,
        "missing_members_at_most": stat_missing.members_at_most,
    }


def _table_rows(
    table: ScopedTable,
    info: RoundInfo,
    period: Period | None,
    variances: Mapping[_ValueKey, list[float | None]],
) -> Iterable[dict[str, object]]:
    spec = _spec(table)
    kinds = {s.name: s.kind for s in spec.statistics} if spec else {}
    program = table.scope == PROGRAM
    for cell in table.cells:
        key = _sorted_key(cell.key)
        base: dict[str, object] = {
            "round_id": info.round_id,
            "period": info.period,
            "metric": table.metric,
            "metric_version": table.version,
            "scope": table.scope,
            "carriers_asked": info.carriers_asked,
            "carriers_answered": info.carriers_answered,
        }
        base.update({str(d): v for d, v in cell.key})
        values: dict[str, object] = {s.name: s.value for s in cell.stats if s.value is not None}
        if period is not None:
            values[MONTHS_IN_CELL] = months_in_cell(cell.key, period)
        sds: dict[str, float | None] = {}
        for stat in cell.stats:
            kind = kinds.get(stat.name)
            if program:
                sd = _program_sd(table, key, stat, variances)
            else:
                sd = _stat_sd(stat, kind, table.disclosure) if stat.value is not None else None
            sds[stat.name] = sd
            if kind is StatKind.HISTOGRAM or isinstance(stat.value, Histogram):
                continue
            withheld = stat.status is Status.WITHHELD
            incomplete = program and stat.missing is not None
            value = stat.value
            yield {
                **base,
                "statistic": stat.name,
                "kind": str(kind) if kind is not None else None,
                "value": None if value is None else float(value),
                "value_int": value if isinstance(value, int) else None,
                "status": INCOMPLETE if incomplete and not withheld else str(stat.status),
                "withheld": withheld,
                "incomplete": incomplete,
                "noise_sd": sd,
                "unreliable": False,
                **_missing(stat.missing),
            }
        for fig in cell.figures:
            finite = math.isfinite(fig.value)
            reason = _unreliable(spec, fig.name, values) if spec and finite else None
            sd = _figure_sd(spec, fig.name, values, sds) if spec and finite else None
            inputs = [s for s in cell.stats if spec and _input_of(spec, fig.name, s.name)]
            perturbed = any(s.status is Status.PERTURBED for s in inputs)
            # A carrier's rate on a value its node withheld is withheld with it; a program
            # rate on a sum that leaves a carrier out is incomplete.
            withheld = not program and any(s.status is Status.WITHHELD for s in inputs)
            if withheld:
                status = WITHHELD
            elif not fig.complete:
                status = INCOMPLETE
            else:
                status = PERTURBED if perturbed else RELEASED
            yield {
                **base,
                "statistic": fig.name,
                "kind": FIGURE,
                "value": fig.value if finite and not withheld else None,
                "value_int": None,
                "status": status,
                "withheld": withheld,
                "incomplete": not fig.complete and not withheld,
                "noise_sd": sd,
                "unreliable": reason is not None,
                "unreliable_reason": reason,
                **_figure_missing(spec, fig.name, cell.stats),
            }


def _figure_missing(
    spec: MetricSpec | None, figure: str, stats: Sequence[StatValue]
) -> dict[str, object]:
    """A figure leaves out what its inputs leave out: the most carriers any of them misses (as
    the tidy export says, :func:`coordinator.export.tidy_rows`)."""
    carriers = [
        s.missing.carriers
        for s in stats
        if s.missing is not None and (spec is None or _input_of(spec, figure, s.name))
    ]
    return {"missing_carriers": max(carriers)} if carriers else {}


def _input_of(spec: MetricSpec, figure: str, stat: str) -> bool:
    fig = next((f for f in spec.figures if f.name == figure), None)
    return fig is not None and stat in fig.inputs


# --- typing -----------------------------------------------------------------------------------


def _typed(rows: list[dict[str, object]], cols: Sequence[str]) -> pd.DataFrame:
    data: dict[str, pd.Series] = {}
    for c in cols:
        raw = [r.get(c) for r in rows]
        if c == str(Dimension.MONTH):
            data[c] = pd.to_datetime(
                pd.Series(raw, dtype=object), format="%Y-%m", errors="coerce"
            ).astype("datetime64[ns]")
        elif dtype_of(c) == "boolean":
            data[c] = pd.Series([bool(v) if v is not None else False for v in raw], dtype="boolean")
        elif dtype_of(c) == "Int64":
            data[c] = pd.Series(
                [pd.NA if v is None or v == "" else int(v) for v in raw],  # type: ignore[call-overload]
                dtype="Int64",
            )
        elif dtype_of(c) == "Float64":
            data[c] = pd.Series(
                [
                    pd.NA if v is None or (isinstance(v, float) and math.isnan(v)) else v
                    for v in raw
                ],
                dtype="Float64",
            )
        else:
            data[c] = pd.Series([pd.NA if v is None else str(v) for v in raw], dtype="string")
    return pd.DataFrame(data, columns=list(cols))


def _attrs(info: RoundInfo, frame: pd.DataFrame) -> dict[str, object]:
    withheld = bool(frame["withheld"].any()) if len(frame) else False
    return {
        "round_id": info.round_id,
        "period": info.period,
        "state": info.state,
        "carriers_asked": info.carriers_asked,
        "carriers_answered": info.carriers_answered,
        "carriers": [{"carrier_id": c, "state": s, "message": m} for c, s, m in info.carriers],
        "late": [],
        "complete": info.carriers_answered == info.carriers_asked and not withheld,
    }
