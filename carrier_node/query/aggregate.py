"""What every metric builder shares: the build context and the pieces its query is made of.

A builder writes the fixed shape of its query as SQL templates (statistics, joins, CTE bodies)
and finishes it here: :func:`keyed` adds the group-by dimensions as columns and as the GROUP BY,
:func:`with_ctes` attaches the CTEs. Three kinds of cells occur in the catalogue:

- member-month metrics (:func:`member_month_cells`): every group of enrolled member months (CTE
  ``mm``) is a cell, with the events counted in it (0 where none);
- event metrics: rows or events, each in the member month of its date, joined to ``mm``; a
  cell exists where an event counted;
- person metrics: one row per member with the attributes of one chosen member month (see
  :func:`attributed_months`); a cell exists where a person counted.

So a cell exists exactly when a statistic counting people in it (members, claimants, ...) is
above zero. Member-dimension filters select cells: they apply to the member month that gives a
row its key, so a filtered query returns exactly the matching cells of the unfiltered one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlglot import exp

from carrier_node.data.control_totals import ControlTotals
from carrier_node.query import sql
from fedoversight.catalogue import LAG_MONTHS, MetricSpec, StatisticSpec, StatKind, get_metric
from fedoversight.codelists import drg_types, place_of_service_codes, revenue_codes
from fedoversight.dimensions import MEMBER_DIMENSIONS, Dimension
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period

#: Alias (and CTE name) of the member months in every query.
MM = "mm"


@dataclass(frozen=True)
class BuildContext:
    carrier_id: str
    period: Period
    query: QuerySpec
    #: Tables the data source can read; None when unknown (every table assumed present).
    tables: frozenset[str] | None = None
    #: The node's secret for record keys (:func:`sql.member_key`); never leaves the engine.
    record_secret: str = ""
    #: Whether statistics also come with clamped sums (differential privacy).
    clamped: bool = False
    #: The carrier's declared monthly totals (ops.data_quality compares the data with them).
    control_totals: ControlTotals = field(default_factory=ControlTotals)

    @property
    def clamps(self) -> dict[str, int]:
        """Under differential privacy, each statistic's clamp (see
        :meth:`MetricSpec.contribution_clamp`); else none."""
        if not self.clamped:
            return {}
        spec, months = self.spec, len(self.period.months())
        out = {}
        for stat in spec.statistics:
            clamp = spec.contribution_clamp(stat, self.group_by, months)
            if clamp is not None:
                out[stat.name] = clamp
        return out

    @property
    def group_by(self) -> tuple[Dimension, ...]:
        return self.query.group_by

    @property
    def spec(self) -> MetricSpec:
        return get_metric(self.query.metric, self.query.version)

    def statistics(self, *names: str) -> tuple[StatisticSpec, ...]:
        """The metric's declarations of ``names`` (all of them when none is given), in the
        order given."""
        if not names:
            return self.spec.statistics
        return tuple(self.spec.statistic(n) for n in names)

    def member_key(self, member_id: exp.Expr) -> exp.Expr:
        """The record key of ``member_id`` (for rows that are not member months)."""
        return sql.member_key(member_id, self.record_secret)

    @property
    def member_dims(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.group_by if d in MEMBER_DIMENSIONS)

    @property
    def member_filters(self) -> dict[Dimension, tuple[str, ...]]:
        return {d: v for d, v in self.query.filters if d in MEMBER_DIMENSIONS}

    @property
    def line_filters(self) -> dict[Dimension, tuple[str, ...]]:
        """Filters on dimensions of claim rows (service categories, drug class)."""
        return {d: v for d, v in self.query.filters if d not in MEMBER_DIMENSIONS}

    def has_table(self, name: str) -> bool:
        return self.tables is None or name in self.tables

    def parameter(self, name: str) -> float:
        """The query's value of a declared parameter, else its declared default."""
        given = self.query.parameter_map
        if name in given:
            return float(given[name])
        spec = get_metric(self.query.metric, self.query.version)
        for p in spec.parameters:
            if p.name == name:
                return p.default
        raise KeyError(name)

    def period_values(self) -> dict[str, exp.Expr]:
        """Placeholders ``:start`` and ``:end``: the period's first and last day."""
        return {
            "start": sql.date_lit(self.period.start_date),
            "end": sql.date_lit(self.period.end_date),
        }


Builder = Callable[[BuildContext], exp.Select]


def histogram_columns(statistic: str) -> tuple[str, str, str]:
    """Columns carrying a histogram statistic: a query of a metric with one returns a row per
    cell and non-empty bin with the bin index, its count and its cents; the cell's other
    statistics repeat on each of its rows. The bin's :func:`disclosure_columns` come with it."""
    return (f"{statistic}__bin", f"{statistic}__count", f"{statistic}__cents")


# --- the aggregation layer --------------------------------------------------------------------
#
# Next to each statistic a query returns what disclosure control needs of it (never sent: the
# engine reads them into the raw cells, and :mod:`carrier_node.disclosure` uses them):
#
# - ``__support``: the members with a non-zero contribution (for MEMBERS: the value itself);
# - ``__kmin`` and ``__kmax``: the least and greatest record key (:func:`sql.member_key`) of
#   those members, from which the cell's noise is drawn, so the same people and value always
#   get the same noise;
# - ``__top``: the largest absolute contribution of one member (dollars and quantities), to
#   which their noise is proportional;
# - ``__rest``: for a part of another statistic (``part_of``), the members contributing to the
#   rest, whole less part, which anyone can work out.
#
# Builders produce the rows; :func:`member_cells` (rows one per cell and member) and
# :func:`distinct_members` (any rows) write the aggregates from the declared statistic kinds,
# so a statistic cannot come without them (the engine refuses a result that lacks one).

#: The record key column of the member months and of per-member rows.
KEY = "member_key"
SUPPORT, KEY_LOW, KEY_HIGH, TOP, REST = "__support", "__kmin", "__kmax", "__top", "__rest"
#: Under differential privacy: the statistic with each member's contribution clamped.
CLAMPED = "__clamped"


def disclosure_columns(stat: StatisticSpec, clamped: bool = False) -> tuple[str, ...]:
    """The columns a query returns next to ``stat`` (on each bin row for a histogram), with
    its clamped sum when ``clamped`` (differential privacy) and it has a bound."""
    name = stat.name
    if stat.kind is StatKind.HISTOGRAM:
        return (name + KEY_LOW, name + KEY_HIGH, name + TOP)
    if stat.kind is StatKind.MEMBERS:
        return (name + KEY_LOW, name + KEY_HIGH)
    if not stat.by_members:
        return (name + TOP,)
    out = [name + SUPPORT, name + KEY_LOW, name + KEY_HIGH]
    if stat.kind.magnitude:
        out.append(name + TOP)
    if clamped and stat.bound is not None:
        out.append(name + CLAMPED)
    if stat.part_of is not None:
        out.append(name + REST)
    return tuple(out)


def result_columns(stat: StatisticSpec, clamped: bool = False) -> tuple[str, ...]:
    """Every column of ``stat`` in a cell row: its value and :func:`disclosure_columns`."""
    if stat.kind is StatKind.HISTOGRAM:
        return disclosure_columns(stat, clamped)
    return (stat.name, *disclosure_columns(stat, clamped))


def _when(condition: exp.Expr, value: exp.Expr) -> exp.Case:
    """CASE WHEN ``condition`` THEN ``value`` END, taking both as they are (not copied: give
    each its own, or copies)."""
    return exp.Case().when(condition, value, copy=False)


def _sum0(value: exp.Expr) -> exp.Expr:
    return exp.func("COALESCE", exp.Sum(this=value), sql.num(0))


def member_aggregates(
    rows: str,
    statistics: Sequence[StatisticSpec],
    tops: Mapping[str, exp.Expr] | None = None,
    clamps: Mapping[str, int] | None = None,
) -> list[exp.Expr]:
    """The aggregates of ``statistics`` over per-member rows (alias ``rows``: one row per cell
    and member, with :data:`KEY` and a column per statistic named as it, holding the member's
    contribution: 0 or 1 for MEMBERS). A total no member contributes to takes its largest
    contribution from ``tops`` (by name: its largest row) when given. Under differential
    privacy, each statistic of ``clamps`` also comes summed with every member's contribution
    clamped to its bound (``__clamped``)."""
    out: list[exp.Expr] = []
    key = col(KEY, rows)
    for stat in statistics:
        value = col(stat.name, rows)
        name = stat.name
        if stat.kind is StatKind.MEMBERS:
            present = value > 0
            out += [
                _sum0(exp.Case().when(present, sql.num(1)).else_(sql.num(0))).as_(name, copy=False),
                exp.Min(this=_when(present.copy(), key.copy())).as_(name + KEY_LOW, copy=False),
                exp.Max(this=_when(present.copy(), key.copy())).as_(name + KEY_HIGH, copy=False),
            ]
            continue
        assert stat.kind is not StatKind.HISTOGRAM, "histograms have their own rows"
        out.append(_sum0(value.copy()).as_(name, copy=False))
        if stat.mirrors is not None:
            out += _mirrored(stat, rows, key, clamps)
            continue
        if not stat.by_members:
            top = (tops or {}).get(name, exp.Max(this=exp.Abs(this=value.copy())))
            out.append(exp.func("COALESCE", top.copy(), sql.num(0)).as_(name + TOP, copy=False))
            continue
        nonzero = exp.NEQ(this=value.copy(), expression=sql.num(0))
        out += [
            exp.Count(this=_when(nonzero, sql.num(1))).as_(name + SUPPORT, copy=False),
            exp.Min(this=_when(nonzero.copy(), key.copy())).as_(name + KEY_LOW, copy=False),
            exp.Max(this=_when(nonzero.copy(), key.copy())).as_(name + KEY_HIGH, copy=False),
        ]
        if stat.kind.magnitude:
            top = exp.Max(this=exp.Abs(this=value.copy()))
            out.append(exp.func("COALESCE", top, sql.num(0)).as_(name + TOP, copy=False))
        clamp = (clamps or {}).get(name)
        if clamp is not None:
            clamped = exp.func(
                "GREATEST", exp.func("LEAST", value.copy(), sql.num(clamp)), sql.num(-clamp)
            )
            out.append(_sum0(clamped).as_(name + CLAMPED, copy=False))
        if stat.part_of is not None:
            whole = col(stat.part_of, rows)
            rest = exp.NEQ(
                this=exp.Sub(this=whole.copy(), expression=value.copy()), expression=sql.num(0)
            )
            out.append(exp.Count(this=_when(rest, sql.num(1))).as_(name + REST, copy=False))
    return out


def _mirrored(
    stat: StatisticSpec, rows: str, key: exp.Column, clamps: Mapping[str, int] | None
) -> list[exp.Expr]:
    """The disclosure columns of a declared total (``mirrors``): those of the statistic it
    mirrors, from that statistic's per-member contributions. Under differential privacy its
    "clamped" sum is its value: no member's data is in it to clamp."""
    assert stat.mirrors is not None
    mirrored = col(stat.mirrors, rows)
    nonzero = exp.NEQ(this=mirrored.copy(), expression=sql.num(0))
    out: list[exp.Expr] = [
        exp.Count(this=_when(nonzero, sql.num(1))).as_(stat.name + SUPPORT, copy=False),
        exp.Min(this=_when(nonzero.copy(), key.copy())).as_(stat.name + KEY_LOW, copy=False),
        exp.Max(this=_when(nonzero.copy(), key.copy())).as_(stat.name + KEY_HIGH, copy=False),
    ]
    if stat.kind.magnitude:
        top = exp.Max(this=exp.Abs(this=mirrored.copy()))
        out.append(exp.func("COALESCE", top, sql.num(0)).as_(stat.name + TOP, copy=False))
    if (clamps or {}).get(stat.name) is not None:
        out.append(_sum0(col(stat.name, rows)).as_(stat.name + CLAMPED, copy=False))
    return out


def distinct_members(
    name: str, member: exp.Expr, key: exp.Expr, condition: exp.Expr | None = None
) -> list[exp.Expr]:
    """A MEMBERS statistic over rows in which a member may appear more than once (member
    months, events): the distinct members meeting ``condition`` and their least and greatest
    record keys (both indifferent to repeats)."""
    if condition is None:
        counted, keyed_ = member.copy(), key.copy()
    else:
        counted, keyed_ = _when(condition, member.copy()), _when(condition.copy(), key.copy())
    return [
        exp.Count(this=exp.Distinct(expressions=[counted])).as_(name, copy=False),
        exp.Min(this=keyed_).as_(name + KEY_LOW, copy=False),
        exp.Max(this=keyed_.copy()).as_(name + KEY_HIGH, copy=False),
    ]


#: Alias of the member rows inside :func:`member_cells`.
MEMBER_ROWS = "c"


def member_cells(
    ctx: BuildContext,
    member_rows: exp.Select,
    dims: Sequence[str],
    statistics: Sequence[StatisticSpec],
    tops: Mapping[str, exp.Expr] | None = None,
) -> exp.Select:
    """Cells from ``member_rows`` (one row per cell and member: the cell's ``dims``,
    :data:`KEY` and the member's contribution to each statistic, see
    :func:`member_aggregates`): the ``dims`` and every statistic with its disclosure columns
    (and clamped sums when ``ctx`` asks for them). Summing per member first is what makes a
    member's contribution visible."""
    rows = MEMBER_ROWS
    query = exp.select(*member_aggregates(rows, statistics, tops, ctx.clamps)).from_(
        member_rows.subquery(rows), copy=False
    )
    return keyed(query, [col(d, rows) for d in dims])


def per_member(
    query: exp.Select,
    cell_keys: Sequence[exp.Column],
    member: exp.Column,
    key: exp.Expr | None = None,
) -> exp.Select:
    """``query`` (aggregates) grouped by cell and member: ``cell_keys`` (named as their
    dimension), ``member`` as ``member_id`` and its record key ``key`` (by default the member
    months' :data:`KEY`) as :data:`KEY` become columns; the first two the GROUP BY."""
    record_key = col(KEY, MM) if key is None else key
    query = query.select(
        *[k.copy() for k in cell_keys],
        member.copy().as_("member_id"),
        exp.Min(this=record_key.copy()).as_(KEY),
        copy=False,
    )
    return query.group_by(*[k.copy() for k in cell_keys], member.copy(), copy=False)


def event_cells(
    ctx: BuildContext, per_member_rows: exp.Select, member: str, *names: str
) -> exp.Select:
    """Cells of the statistics ``names`` from ``per_member_rows`` (aggregates over event rows
    joined to ``mm``, whose member column is ``member``), grouped by cell and member first."""
    cell_keys = keys(ctx)
    rows = per_member(per_member_rows, cell_keys, col("member_id", member))
    return member_cells(ctx, rows, [k.name for k in cell_keys], ctx.statistics(*names))


def numerator_columns(statistics: Sequence[StatisticSpec], clamped: bool = False) -> list[str]:
    """The columns of ``statistics`` (values and disclosure columns), in order."""
    return [c for s in statistics for c in result_columns(s, clamped)]


Ctes = Sequence[tuple[str, exp.Expr]]


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table)


def matches(column: exp.Expr, values: Sequence[str]) -> exp.Expr:
    return column.isin(*[sql.lit(v) for v in values])


def with_ctes(query: exp.Select, ctes: Ctes) -> exp.Select:
    for name, body in ctes:
        query = sql.with_cte(query, name, body)
    return query


def keyed(query: exp.Select, keys: Sequence[exp.Column]) -> exp.Select:
    """Add ``keys`` (columns named as their dimension) as columns and GROUP BY; with no keys,
    the single cell exists only when there is a row (so no all-zero cell is returned)."""
    if not keys:
        return query.having(exp.Count(this=exp.Star()) > 0, copy=False)
    query = query.select(*[k.copy() for k in keys], copy=False)
    return query.group_by(*[k.copy() for k in keys], copy=False)


def keys(
    ctx: BuildContext, line_table: str | None = None, member_table: str = MM
) -> list[exp.Column]:
    """The group-by columns: member dimensions from ``member_table``, the others (service
    categories, drug class) from ``line_table``."""
    out = []
    for d in ctx.group_by:
        if d in MEMBER_DIMENSIONS:
            out.append(col(d.value, member_table))
        else:
            assert line_table is not None, f"{d} has no source in this query"
            out.append(col(d.value, line_table))
    return out


def filter_lines(query: exp.Select, ctx: BuildContext, line_table: str) -> exp.Select:
    """Apply the non-member filters on ``line_table``'s columns of the same names."""
    for dim, wanted in ctx.line_filters.items():
        query = query.where(matches(col(dim.value, line_table), wanted))
    return query


def needs_spans(ctx: BuildContext) -> bool:
    """Whether the query groups or filters by a member dimension of the span in force (plan,
    age band, sex, ...), not only by calendar and carrier."""
    used = {*ctx.group_by, *(d for d, _ in ctx.query.filters)}
    return any(d in MEMBER_DIMENSIONS and d not in sql.SPAN_FREE_DIMENSIONS for d in used)


def member_month_ctes(
    ctx: BuildContext, *, filtered: bool = True, spans: bool = False
) -> list[tuple[str, exp.Expr]]:
    """CTEs ``months`` and ``mm`` (the member months of the period); ``filtered`` applies the
    member-dimension filters to the member months themselves (right for metrics whose cells are
    member months; person metrics filter their attributed month instead). ``mm`` carries the
    attributes of the span in force when the query's keys or filters need them, or when
    ``spans`` says the metric reads them (birth or death date, sex); else only the calendar."""
    filters = ctx.member_filters if filtered else {}
    member_months = sql.member_months(
        ctx.carrier_id, filters, spans=spans or needs_spans(ctx), secret=ctx.record_secret
    )
    ranked = any(t.name == "multi_span" for t in member_months.find_all(exp.Table))
    return [
        ("months", exp.select("*").from_(sql.months_cte(ctx.period))),
        *([sql.multi_span_members()] if ranked else []),
        (MM, member_months),
    ]


def attributed_months(ctx: BuildContext, *, last_month_only: bool) -> exp.Select:
    """One member month per member from the (unfiltered) ``mm``: the period's last month (so
    only members enrolled then), or each member's latest enrolled month of the period; the
    member filters then apply to it."""
    if last_month_only:
        query = (
            exp.select("*")
            .from_(exp.alias_(exp.to_table(MM), "a"))
            .where(col("month_start", "a").eq(sql.date_lit(ctx.period.last.first_day)))
        )
    else:
        ranked = sql.fill(_LATEST_MONTH)
        query = exp.select("*").from_(ranked.subquery("a")).where(col("month_rank", "a").eq(1))
    for dim, values in ctx.member_filters.items():
        query = query.where(matches(col(dim.value, "a"), values))
    return query


#: Claim rows of the period summed per member and month: one row per member month with a
#: medical row (``medical_rows`` > 0) or a fill (``pharmacy_rows`` > 0; the medical-only totals
#: are NULL where the month has no medical row). Every version counts. The metrics that sum rows
#: per member month read this instead of the rows: cost.pmpm, member cost share, the
#: out-of-network share, the persons' period allowed, the claims lag (paid cents by months to
#: payment, ``lag_rows`` the rows with a paid date not before the incurred month), data quality
#: and the denial rate (its adjudicated lines: each medical line's latest row, see
#: :func:`sql.latest_medical_rows`, when paid, adjusted or denied; the CTE ``later_versions``
#: comes first). Summed again per member and cell it gives exactly the sums over the rows (SUM
#: skips NULL alike), and in a batch the rows are read and grouped once for all of them.
#:
#: The medical rows and the fills are grouped apart and the two joined (grouping them as one
#: union made every fill carry the medical columns through the aggregation), each total as the
#: union's SUM would have it: a side without rows adds nothing, a side whose rows all hold
#: NULL adds NULL, and a total one side holds as 0 on every row is that side's ``zero`` (0
#: where it has rows). The sums are BIGINT: a member month's cents are far inside its range,
#: and DuckDB's wider SUM type doubled the block's memory.
_SPEND = """
SELECT COALESCE(m.member_id, p.member_id) AS member_id,
       COALESCE(m.month_start, p.month_start) AS month_start,
       COALESCE(m.medical_rows, p.zero) AS medical_rows,
       COALESCE(p.pharmacy_rows, m.zero) AS pharmacy_rows,
       COALESCE(m.allowed_cents + p.allowed_cents, m.allowed_cents, p.allowed_cents)
         AS allowed_cents,
       COALESCE(m.paid_cents + p.paid_cents, m.paid_cents, p.paid_cents) AS paid_cents,
       COALESCE(m.deductible_cents, p.zero) AS deductible_cents,
       COALESCE(m.coinsurance_cents, p.zero) AS coinsurance_cents,
       COALESCE(m.copay_cents, p.zero) AS copay_cents,
       COALESCE(p.pharmacy_member_paid_cents, m.zero) AS pharmacy_member_paid_cents,
       m.out_of_network_allowed_cents AS out_of_network_allowed_cents,
       m.known_network_allowed_cents AS known_network_allowed_cents,
       COALESCE(m.invalid_place_of_service, p.zero) AS invalid_place_of_service,
       COALESCE(m.invalid_revenue_code, p.zero) AS invalid_revenue_code,
       COALESCE(m.invalid_drg, p.zero) AS invalid_drg,
       COALESCE(m.missing_fields, p.zero) AS missing_fields,
       COALESCE(m.lag_rows, p.zero) AS lag_rows,
       COALESCE(m.adjudicated_lines, p.zero) AS adjudicated_lines,
       COALESCE(m.denied_lines, p.zero) AS denied_lines,
       m.adjudicated_charge_cents AS adjudicated_charge_cents,
       COALESCE(m.denied_charge_cents, p.zero) AS denied_charge_cents,
       :lag_columns
FROM (
  SELECT c.member_id AS member_id, c.month_start AS month_start, CAST(0 AS BIGINT) AS zero,
         CAST(COUNT(*) AS BIGINT) AS medical_rows,
         CAST(SUM(c.allowed_cents) AS BIGINT) AS allowed_cents,
         CAST(SUM(c.paid_cents) AS BIGINT) AS paid_cents,
         CAST(SUM(c.deductible_cents) AS BIGINT) AS deductible_cents,
         CAST(SUM(c.coinsurance_cents) AS BIGINT) AS coinsurance_cents,
         CAST(SUM(c.copay_cents) AS BIGINT) AS copay_cents,
         CAST(SUM(c.out_of_network_allowed_cents) AS BIGINT) AS out_of_network_allowed_cents,
         CAST(SUM(c.known_network_allowed_cents) AS BIGINT) AS known_network_allowed_cents,
         CAST(SUM(c.invalid_place_of_service) AS BIGINT) AS invalid_place_of_service,
         CAST(SUM(c.invalid_revenue_code) AS BIGINT) AS invalid_revenue_code,
         CAST(SUM(c.invalid_drg) AS BIGINT) AS invalid_drg,
         CAST(SUM(c.missing_fields) AS BIGINT) AS missing_fields,
         CAST(SUM(CASE WHEN c.lag >= 0 THEN 1 ELSE 0 END) AS BIGINT) AS lag_rows,
         CAST(SUM(c.adjudicated) AS BIGINT) AS adjudicated_lines,
         CAST(SUM(c.denied_line) AS BIGINT) AS denied_lines,
         CAST(SUM(c.adjudicated_charge_cents) AS BIGINT) AS adjudicated_charge_cents,
         CAST(SUM(c.denied_charge_cents) AS BIGINT) AS denied_charge_cents,
         :lag_sums
  FROM (
    SELECT r.member_id AS member_id,
           :line_month AS month_start,
           CAST(r.allowed_amount * 100 AS BIGINT) AS allowed_cents,
           CAST(r.paid_amount * 100 AS BIGINT) AS paid_cents,
           CAST(COALESCE(r.deductible_amount, 0) * 100 AS BIGINT) AS deductible_cents,
           CAST(COALESCE(r.coinsurance_amount, 0) * 100 AS BIGINT) AS coinsurance_cents,
           CAST(COALESCE(r.copay_amount, 0) * 100 AS BIGINT) AS copay_cents,
           CASE WHEN NOT r.in_network THEN CAST(r.allowed_amount * 100 AS BIGINT) ELSE 0 END
             AS out_of_network_allowed_cents,
           CASE WHEN r.in_network IS NOT NULL THEN CAST(r.allowed_amount * 100 AS BIGINT)
                ELSE 0 END AS known_network_allowed_cents,
           CASE WHEN r.place_of_service IS NOT NULL AND NOT :pos_known THEN 1 ELSE 0 END
             AS invalid_place_of_service,
           CASE WHEN r.revenue_code IS NOT NULL AND NOT :revenue_known THEN 1 ELSE 0 END
             AS invalid_revenue_code,
           CASE WHEN r.drg IS NOT NULL AND NOT :drg_known THEN 1 ELSE 0 END AS invalid_drg,
           CASE WHEN (r.claim_type = 'professional' AND r.place_of_service IS NULL)
                  OR (r.claim_type = 'institutional' AND r.bill_type IS NULL)
                THEN 1 ELSE 0 END AS missing_fields,
           CASE WHEN r.lag_months >= :last_lag THEN :last_lag ELSE r.lag_months END AS lag,
           r.adjudicated AS adjudicated,
           CASE WHEN r.adjudicated = 1 AND r.claim_status = 'denied' THEN 1 ELSE 0 END
             AS denied_line,
           CASE WHEN r.adjudicated = 1 THEN CAST(r.charge_amount * 100 AS BIGINT) END
             AS adjudicated_charge_cents,
           CASE WHEN r.adjudicated = 1 AND r.claim_status = 'denied'
                THEN CAST(r.charge_amount * 100 AS BIGINT) ELSE 0 END AS denied_charge_cents
    FROM (
      SELECT x.member_id AS member_id, x.claim_start_date AS claim_start_date,
             x.claim_type AS claim_type, x.allowed_amount AS allowed_amount,
             x.paid_amount AS paid_amount, x.deductible_amount AS deductible_amount,
             x.coinsurance_amount AS coinsurance_amount, x.copay_amount AS copay_amount,
             x.in_network AS in_network,
             NULLIF(x.place_of_service, '') AS place_of_service,
             NULLIF(x.revenue_code, '') AS revenue_code, NULLIF(x.drg, '') AS drg,
             NULLIF(x.bill_type, '') AS bill_type,
             CAST((EXTRACT(YEAR FROM x.paid_date) - EXTRACT(YEAR FROM x.claim_start_date)) * 12
                  + EXTRACT(MONTH FROM x.paid_date) - EXTRACT(MONTH FROM x.claim_start_date)
                  AS BIGINT) AS lag_months,
             x.claim_status AS claim_status, x.charge_amount AS charge_amount,
             CASE WHEN (later.last_version IS NULL
                        OR COALESCE(x.claim_version, 1) >= later.last_version)
                   AND x.claim_status IN ('paid', 'adjusted', 'denied')
                  THEN 1 ELSE 0 END AS adjudicated
      FROM medical_claims AS x
      LEFT JOIN later_versions AS later
        ON later.claim_id = x.claim_id AND later.claim_line = x.claim_line
      WHERE x.claim_start_date BETWEEN :start AND :end
    ) AS r
  ) AS c
  GROUP BY c.member_id, c.month_start
) AS m
FULL OUTER JOIN (
  SELECT f.member_id AS member_id, :fill_month AS month_start,
         CAST(0 AS BIGINT) AS zero, CAST(COUNT(*) AS BIGINT) AS pharmacy_rows,
         CAST(SUM(CAST(f.allowed_amount * 100 AS BIGINT)) AS BIGINT) AS allowed_cents,
         CAST(SUM(CAST(f.paid_amount * 100 AS BIGINT)) AS BIGINT) AS paid_cents,
         CAST(SUM(CAST(COALESCE(f.member_paid_amount, 0) * 100 AS BIGINT)) AS BIGINT)
           AS pharmacy_member_paid_cents
  FROM pharmacy_claims AS f
  WHERE f.fill_date BETWEEN :start AND :end
  GROUP BY f.member_id, :fill_month
) AS p
  ON p.member_id = m.member_id AND p.month_start = m.month_start
"""


def lag_column(k: int) -> str:
    """The spend column of paid cents ``k`` months after the incurred month (the last bucket:
    that many or more)."""
    return f"paid_lag_{k:02d}_cents"


def member_month_spend(ctx: BuildContext) -> exp.Query:
    """The period's claim rows summed per member and month (see :data:`_SPEND`)."""
    return _member_month_spend(ctx.period).copy()


@functools.lru_cache(maxsize=32)
def _member_month_spend(period: Period) -> exp.Query:
    """:func:`member_month_spend` of ``period``, built once (most queries of a batch read it;
    callers copy it)."""
    values = {
        "start": sql.date_lit(period.start_date),
        "end": sql.date_lit(period.end_date),
    }
    lag, paid = col("lag", "c"), col("paid_cents", "c")
    # The lag buckets: summed per member month of the medical rows, and taken from there (a
    # fill is in no bucket).
    sums = [
        exp.cast(
            exp.Sum(this=exp.Case().when(lag.copy().eq(k), paid.copy()).else_(sql.num(0))),
            "BIGINT",
        ).as_(lag_column(k))
        for k in range(LAG_MONTHS + 1)
    ]
    columns = [
        exp.func("COALESCE", col(lag_column(k), "m"), col("zero", "p")).as_(lag_column(k))
        for k in range(LAG_MONTHS + 1)
    ]
    tree = sql.fill_query(
        _SPEND,
        {"lag_sums": sums, "lag_columns": columns},
        pos_known=sql.codes_in(col("place_of_service", "r"), sorted(place_of_service_codes())),
        revenue_known=sql.codes_in(col("revenue_code", "r"), sorted(revenue_codes())),
        drg_known=sql.codes_in(col("drg", "r"), sorted(drg_types())),
        last_lag=sql.num(LAG_MONTHS),
        line_month=sql.month_start_of(col("claim_start_date", "r"), period),
        fill_month=sql.month_start_of(col("fill_date", "f"), period),
        **values,
    )
    rows = next(q for q in tree.find_all(exp.Subquery) if q.alias == "c")
    rows.this.meta[sql.FENCE] = True  # each row's lag, read by every bucket, computed once
    for part in tree.find_all(exp.Subquery):
        if part.alias in ("m", "p"):  # each row's cents and counts, summed per member month
            part.this.meta[sql.INT64_SUMS] = True
    return tree


#: Each enrolled member month with a claim row (the member months ``mm`` of the query, so
#: with the member's dimensions and record key) and its spend: one row per member month, which
#: the metrics summing spend per member and cell read without joining the member months again.
_ENROLLED_SPEND = """
SELECT mm.*, s.medical_rows AS medical_rows, s.pharmacy_rows AS pharmacy_rows,
       s.allowed_cents AS allowed_cents, s.paid_cents AS paid_cents,
       s.deductible_cents AS deductible_cents, s.coinsurance_cents AS coinsurance_cents,
       s.copay_cents AS copay_cents, s.pharmacy_member_paid_cents AS pharmacy_member_paid_cents,
       s.out_of_network_allowed_cents AS out_of_network_allowed_cents,
       s.known_network_allowed_cents AS known_network_allowed_cents,
       s.lag_rows AS lag_rows, s.adjudicated_lines AS adjudicated_lines,
       s.denied_lines AS denied_lines, s.adjudicated_charge_cents AS adjudicated_charge_cents,
       s.denied_charge_cents AS denied_charge_cents, :lags
FROM spend AS s
JOIN mm ON s.member_id = mm.member_id AND s.month_start = mm.month_start
"""


def enrolled_spend_ctes(ctx: BuildContext) -> list[tuple[str, exp.Expr]]:
    """CTEs ``later_versions``, ``spend`` and ``enrolled_spend`` (see
    :data:`_ENROLLED_SPEND`); they read ``mm``."""
    lags = [col(lag_column(k), "s").as_(lag_column(k)) for k in range(LAG_MONTHS + 1)]
    tree = sql.fill(_ENROLLED_SPEND, {"lags": lags})
    return [sql.later_versions(), ("spend", member_month_spend(ctx)), ("enrolled_spend", tree)]


def one_row_per_member_month(query: exp.Select, group_by: Sequence[Dimension]) -> exp.Select:
    """``query`` (aggregates per cell and member, see :func:`per_member`, over rows holding
    each member month at most once per cell key) without its aggregation where its cells are
    months: a cell then holds each member's one row, whose values are the member's sums (SUM,
    MIN and MAX of one value are the value), and grouping the rows again would be wasted work.
    Only the select list is rewritten (a subquery it reads keeps its aggregates)."""
    if Dimension.MONTH not in group_by:
        return query

    def plain(node: exp.Expr) -> exp.Expr:
        if isinstance(node, (exp.Sum, exp.Min, exp.Max)) and isinstance(node.this, exp.Expr):
            return node.this
        return node

    query.set("expressions", [e.transform(plain, copy=False) for e in query.expressions])
    query.set("group", None)
    return query


_LATEST_MONTH = """
SELECT mm.*, ROW_NUMBER() OVER (PARTITION BY mm.member_id ORDER BY mm.month_start DESC)
         AS month_rank
FROM mm
"""


def member_month_totals(
    group_by: Sequence[Dimension],
    keys_: Sequence[exp.Column],
    rows: str = MM,
    clamped: bool = False,
) -> exp.Select:
    """``member_months`` and ``members`` of the member months ``rows`` (one per member and
    month, with :data:`KEY`) by ``keys_`` (with their disclosure columns: every member of a
    cell contributes to both). With no keys, the single cell exists only when somebody is
    enrolled. ``clamped``: with the clamped sum of member months (themselves: a member month
    is one, so a member never holds more than the cell's months)."""
    member, key = col("member_id", rows), col(KEY, rows)
    members = distinct_members("members", member, key)
    query = exp.select(
        exp.Count(this=exp.Star()).as_("member_months"),
        exp.Count(this=exp.Distinct(expressions=[member.copy()])).as_("member_months" + SUPPORT),
        exp.Min(this=key.copy()).as_("member_months" + KEY_LOW),
        exp.Max(this=key.copy()).as_("member_months" + KEY_HIGH),
        *members,
    ).from_(rows)
    if clamped:
        query = query.select(exp.Count(this=exp.Star()).as_("member_months" + CLAMPED))
    return keyed(members_counted(query, group_by), keys_)


def members_counted(query: exp.Select, group_by: Sequence[Dimension]) -> exp.Select:
    """``query`` (over member months, one row per member and month) counting members without
    ``DISTINCT`` where its cells are months: a cell then holds a member at most once, and each
    ``COUNT(DISTINCT ...)`` would build a hash table of the period's members for nothing."""
    if Dimension.MONTH not in group_by:
        return query

    def plain(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct):
            (counted,) = node.this.expressions
            return exp.Count(this=counted)
        return node

    out = query.transform(plain, copy=False)
    assert isinstance(out, exp.Select)
    return out


#: The statistics every member-month metric takes from its member months.
DENOMINATOR = ("member_months", "members")


def numerator_value(column: exp.Column) -> exp.Expr:
    """A numerator column of a cell without a numerator row: 0, but record keys stay NULL."""
    if column.name.endswith((KEY_LOW, KEY_HIGH)):
        return column
    return exp.func("COALESCE", column, sql.num(0))


def member_month_cells(
    ctx: BuildContext, numerator: exp.Select, statistics: Sequence[StatisticSpec], ctes: Ctes
) -> exp.Select:
    """Every cell of enrolled member months, with ``member_months`` and ``members``, and the
    ``statistics`` of ``numerator`` (keyed by the same member dimensions, with their disclosure
    columns; 0 where it has no row)."""
    dims = ctx.member_dims
    denominator = member_month_totals(ctx.group_by, keys(ctx), clamped=ctx.clamped)
    query = exp.select(
        *[col(d.value, "den") for d in dims],
        *[col(c, "den") for c in numerator_columns(ctx.statistics(*DENOMINATOR), ctx.clamped)],
        *[
            numerator_value(col(c, "num")).as_(c)
            for c in numerator_columns(statistics, ctx.clamped)
        ],
    ).from_(exp.alias_(exp.to_table("den"), "den"))
    on = (
        exp.and_(*[col(d.value, "num").eq(col(d.value, "den")) for d in dims])
        if dims
        else (exp.true())
    )
    query = query.join(exp.alias_(exp.to_table("num"), "num"), on=on, join_type="left")
    return with_ctes(
        query, [*member_month_ctes(ctx), *ctes, ("den", denominator), ("num", numerator)]
    )
