"""How this node evaluates each catalogue metric: one query per metric, built as expressions.

Every builder returns a SELECT whose columns are the query's group-by dimensions (named by the
dimension) and the metric's declared statistics (named by the statistic), one row per cell,
each statistic followed by what disclosure control needs of it (:func:`disclosure_columns`:
the members it rests on, their record keys, the largest contribution of one member; see
:mod:`carrier_node.metric_common`). A metric with a histogram statistic returns one row per
cell and non-empty bin instead (see :func:`histogram_columns`). The engine runs the query where
the data lives and never looks at a row; none of the disclosure columns leaves the node. The
builders live in the ``metric_*`` modules; shared query pieces in :mod:`carrier_node.sql`.

A member's contribution is their part of the cell's statistic: claim rows and events are
summed per member and cell first (per-member metrics — cost.distribution,
cost.high_cost_claimants and the quality measures — have one row per person). Rebates have no
member contributions: their largest contribution is their largest row.
"""

from __future__ import annotations

from sqlglot import exp

from carrier_node import (
    metric_cost,
    metric_enrollment,
    metric_ops,
    metric_quality,
    metric_rx,
    metric_util,
    sql,
)
from carrier_node.metric_common import (
    CLAMPED,
    DENOMINATOR,
    KEY_HIGH,
    KEY_LOW,
    REST,
    SUPPORT,
    TOP,
    BuildContext,
    Builder,
    disclosure_columns,
    histogram_columns,
    member_cells,
    member_month_spend,
    member_month_totals,
    needs_spans,
    numerator_columns,
    numerator_value,
    per_member,
    result_columns,
)
from fedoversight.codelists import category_names
from fedoversight.dimensions import Dimension
from fedoversight.errors import UnknownMetricError

__all__ = [
    "BUILDERS",
    "CLAMPED",
    "KEY_HIGH",
    "KEY_LOW",
    "REST",
    "SUPPORT",
    "TOP",
    "BuildContext",
    "Builder",
    "build",
    "disclosure_columns",
    "histogram_columns",
    "result_columns",
]


def _cols(dims: tuple[Dimension, ...], table: str | None = None) -> list[exp.Column]:
    return [exp.column(d.value, table) for d in dims]


def _with_months(query: exp.Select, ctx: BuildContext) -> exp.Select:
    return query.with_("months", as_=exp.select("*").from_(sql.months_cte(ctx.period)))


def _member_months(ctx: BuildContext) -> exp.Select:
    return sql.member_months(
        ctx.carrier_id, ctx.member_filters, spans=needs_spans(ctx), secret=ctx.record_secret
    )


def enrollment_member_months(ctx: BuildContext) -> exp.Select:
    query = _with_months(
        member_month_totals(ctx.group_by, _cols(ctx.group_by), clamped=ctx.clamped), ctx
    )
    return query.with_("mm", as_=_member_months(ctx))


#: The statistics cost.pmpm and cost.pmpm_by_service_category take from the claims.
_CLAIM_STATISTICS = ("claimants", "allowed_cents", "paid_cents")


def _claims_by_cell(ctx: BuildContext, dims: tuple[Dimension, ...]) -> exp.Select:
    """Claim lines of enrolled member months, summed by ``dims`` and member, then by ``dims``
    (claimants are the members with a line)."""
    member_dims = tuple(d for d in dims if d in sql.MEMBER_DIMENSIONS)
    line_dims = tuple(d for d in dims if d not in sql.MEMBER_DIMENSIONS)
    query = (
        exp.select(
            exp.Literal.number(1).as_("claimants"),
            *[exp.Sum(this=exp.column(name, "l")).as_(name) for name in _CLAIM_STATISTICS[1:]],
        )
        .from_(exp.alias_(exp.to_table("lines"), "l"))
        .join(
            exp.alias_(exp.to_table("mm"), "mm"),
            on=exp.and_(
                exp.column("member_id", "l").eq(exp.column("member_id", "mm")),
                exp.column("month_start", "l").eq(exp.column("month_start", "mm")),
            ),
        )
    )
    for dim, values in ctx.query.filters:
        if dim in line_dims or (dim not in sql.MEMBER_DIMENSIONS):
            query = query.where(exp.column(dim.value, "l").isin(*[sql.lit(v) for v in values]))
    cell_keys = [
        *[exp.column(d.value, "mm") for d in member_dims],
        *[exp.column(d.value, "l") for d in line_dims],
    ]
    members = per_member(query, cell_keys, exp.column("member_id", "l"))
    return member_cells(
        ctx, members, [k.name for k in cell_keys], ctx.statistics(*_CLAIM_STATISTICS)
    )


def _cost(ctx: BuildContext) -> exp.Select:
    """Claims by the full key joined to member months of the member-dimension part of it."""
    dims = ctx.group_by
    member_dims = tuple(d for d in dims if d in sql.MEMBER_DIMENSIONS)
    num, den = exp.to_table("num"), exp.to_table("den")
    claims = numerator_columns(ctx.statistics(*_CLAIM_STATISTICS), ctx.clamped)
    denominators = numerator_columns(ctx.statistics(*DENOMINATOR), ctx.clamped)

    def select(category_from: str = "num") -> exp.Select:
        return exp.select(
            *[exp.column(d.value, category_from if d not in member_dims else "den")
              for d in dims],
            *[exp.column(c, "den") for c in denominators],
            *[numerator_value(exp.column(c, "num")).as_(c) for c in claims],
        )

    on: list[exp.Expr] = [
        exp.column(d.value, "num").eq(exp.column(d.value, "den")) for d in member_dims
    ]
    if len(member_dims) != len(dims):
        # Every category for every other key; each divides its other keys' member months.
        query = _with_every_category(select("cats"), on, _categories(ctx))
    else:
        query = select().from_(exp.alias_(den, "den"))
        query = (
            query.join(exp.alias_(num, "num"), on=exp.and_(*on), join_type="left")
            if on
            else query.join(exp.alias_(num, "num"), join_type="cross")
        )
    ctes: list[tuple[str, exp.Expr]] = [
        ("months", exp.select("*").from_(sql.months_cte(ctx.period))),
        ("mm", _member_months(ctx)),
        ("lines", _lines(ctx)),
        ("den", member_month_totals(member_dims, _cols(member_dims), clamped=ctx.clamped)),
        ("num", _claims_by_cell(ctx, dims)),
    ]
    for name, body in ctes:
        query = query.with_(name, as_=body, copy=False)
    return query


def _categories(ctx: BuildContext) -> tuple[Dimension, tuple[str, ...]]:
    """The category dimension a query groups by and its every category (within its filter)."""
    (dimension,) = (d for d in ctx.group_by if d in _CATEGORY_LEVELS)
    wanted = dict(ctx.query.filters).get(dimension)
    names = category_names(_CATEGORY_LEVELS[dimension])
    return dimension, tuple(c for c in names if wanted is None or c in wanted)


_CATEGORY_LEVELS = {Dimension.SERVICE_CATEGORY: 1, Dimension.SERVICE_CATEGORY_2: 2}


def _with_every_category(
    complete_select: exp.Select, on: list[exp.Expr], levels: tuple[Dimension, tuple[str, ...]]
) -> exp.Select:
    """A cell of every category for every member-dimension cell (zero where nobody had a
    claim): every category divides its other keys' member months, so categories add up to the
    total in every carrier and across carriers, and a category's presence says nothing
    (disclosure control withholds a sensitive one below its floor, zero included)."""
    dimension, categories = levels
    category = dimension.value
    listed = exp.values([(c,) for c in categories], alias="cats", columns=[category])
    matched = [*(o.copy() for o in on),
               exp.column(category, "num").eq(exp.column(category, "cats"))]
    return (
        complete_select.from_(exp.alias_(exp.to_table("den"), "den"))
        .join(listed, join_type="cross")
        .join(exp.alias_(exp.to_table("num"), "num"), on=exp.and_(*matched), join_type="left")
    )


def _lines(ctx: BuildContext) -> exp.Expr:
    """What the cost query sums: the claim rows with their categories; without a category or
    other line dimension to group or filter by, the member-month totals that other cost
    metrics read too (the same sums, computed once in a batch)."""
    used = (*ctx.group_by, *(d for d, _ in ctx.query.filters))
    if all(d in sql.MEMBER_DIMENSIONS for d in used):
        return member_month_spend(ctx)
    return sql.claim_lines(ctx.period, _category_levels(ctx))


def _category_levels(ctx: BuildContext) -> frozenset[int]:
    """Service-category levels a cost query groups or filters by (classifying lines costs)."""
    used = set(ctx.query.group_by) | {d for d, _ in ctx.query.filters}
    return frozenset(
        level for level, dim in ((1, Dimension.SERVICE_CATEGORY),
                                 (2, Dimension.SERVICE_CATEGORY_2)) if dim in used
    )


BUILDERS: dict[str, Builder] = {
    "enrollment.member_months@1": enrollment_member_months,
    "enrollment.churn@1": metric_enrollment.churn,
    "cost.pmpm@1": _cost,
    "cost.pmpm_by_service_category@1": _cost,
    "cost.member_cost_share_pmpm@1": metric_cost.member_cost_share,
    "cost.distribution@1": metric_cost.distribution,
    "cost.high_cost_claimants@1": metric_cost.high_cost_claimants,
    "cost.out_of_network_share@1": metric_cost.out_of_network_share,
    "util.inpatient@1": metric_util.inpatient,
    "util.ed_visits@1": metric_util.ed_visits,
    "util.office_visits@1": metric_util.office_visits,
    "util.scripts@1": metric_util.scripts,
    "outcome.readmission_30d@1": metric_util.readmission_30d,
    "rx.generic_dispensing_rate@1": metric_rx.generic_dispensing_rate,
    "rx.specialty_share@1": metric_rx.specialty_share,
    "rx.spend_by_class@1": metric_rx.spend_by_class,
    "rx.rebate_share@1": metric_rx.rebate_share,
    "quality.breast_cancer_screening@1": metric_quality.breast_cancer_screening,
    "quality.diabetes_hba1c_testing@1": metric_quality.diabetes_hba1c_testing,
    "quality.statin_use_diabetes@1": metric_quality.statin_use_diabetes,
    "ops.claims_lag@1": metric_ops.claims_lag,
    "ops.denial_rate@1": metric_ops.denial_rate,
    "ops.data_quality@1": metric_ops.data_quality,
}


def build(ctx: BuildContext) -> exp.Select:
    key = f"{ctx.query.metric}@{ctx.query.version}"
    try:
        builder = BUILDERS[key]
    except KeyError:
        raise UnknownMetricError(f"this node does not implement {key}") from None
    return builder(ctx)
