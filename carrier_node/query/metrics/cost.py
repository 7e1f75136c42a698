"""Cost metrics: PMPM (overall and by service category), member cost share, the per-member
distribution, high-cost claimants and the out-of-network share."""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import (
    DENOMINATOR,
    MM,
    BuildContext,
    attributed_months,
    col,
    enrolled_spend_ctes,
    keys,
    member_cells,
    member_month_cells,
    member_month_ctes,
    member_month_totals,
    numerator_columns,
    numerator_value,
    one_row_per_member_month,
    per_member,
    with_ctes,
)
from carrier_node.query.registry import implements
from fedoversight.catalogue import HCC_THRESHOLDS, hcc_label
from fedoversight.codelists import category_names
from fedoversight.dimensions import MEMBER_DIMENSIONS, Dimension

# --- PMPM -------------------------------------------------------------------------------------

#: The statistics cost.pmpm and cost.pmpm_by_service_category take from the claims.
_CLAIM_STATISTICS = ("claimants", "allowed_cents", "paid_cents")


def _claims_by_cell(ctx: BuildContext, dims: tuple[Dimension, ...]) -> exp.Select:
    """Claim lines of enrolled member months, summed by ``dims`` and member, then by ``dims``
    (claimants are the members with a line). Without a line dimension, the batch's enrolled
    spend (one row per member month) is summed instead of the lines."""
    member_dims = tuple(d for d in dims if d in MEMBER_DIMENSIONS)
    line_dims = tuple(d for d in dims if d not in MEMBER_DIMENSIONS)
    if not _by_line(ctx):
        query = exp.select(
            exp.Literal.number(1).as_("claimants"),
            *[exp.Sum(this=exp.column(name, MM)).as_(name) for name in _CLAIM_STATISTICS[1:]],
        ).from_(exp.alias_(exp.to_table("enrolled_spend"), MM))
        cell_keys = [exp.column(d.value, MM) for d in member_dims]
        members = one_row_per_member_month(
            per_member(query, cell_keys, exp.column("member_id", MM)), ctx.group_by
        )
        return member_cells(
            ctx, members, [k.name for k in cell_keys], ctx.statistics(*_CLAIM_STATISTICS)
        )
    # The lines summed per member, month and line key first: the member months are then
    # joined to one row per member month and key rather than to every line, and each row is
    # one member's contribution to its cell where the cells are months.
    line = exp.alias_(exp.to_table("lines"), "l")
    grouped = exp.select(
        exp.column("member_id", "l").as_("member_id"),
        exp.column("month_start", "l").as_("month_start"),
        *[exp.column(d.value, "l").as_(d.value) for d in line_dims],
        *[exp.Sum(this=exp.column(name, "l")).as_(name) for name in _CLAIM_STATISTICS[1:]],
    ).from_(line)
    for dim, values in ctx.query.filters:
        if dim not in MEMBER_DIMENSIONS:
            grouped = grouped.where(
                exp.column(dim.value, "l").isin(*[sql.lit(v) for v in values]), copy=False
            )
    grouped = grouped.group_by(
        exp.column("member_id", "l"),
        exp.column("month_start", "l"),
        *[exp.column(d.value, "l") for d in line_dims],
        copy=False,
    )
    query = (
        exp.select(
            exp.Literal.number(1).as_("claimants"),
            *[exp.Sum(this=exp.column(name, "l")).as_(name) for name in _CLAIM_STATISTICS[1:]],
        )
        .from_(grouped.subquery("l"))
        .join(
            exp.alias_(exp.to_table("mm"), "mm"),
            on=exp.and_(
                exp.column("member_id", "l").eq(exp.column("member_id", "mm")),
                exp.column("month_start", "l").eq(exp.column("month_start", "mm")),
            ),
        )
    )
    cell_keys = [
        *[exp.column(d.value, "mm") for d in member_dims],
        *[exp.column(d.value, "l") for d in line_dims],
    ]
    members = one_row_per_member_month(
        per_member(query, cell_keys, exp.column("member_id", "l")), ctx.group_by
    )
    return member_cells(
        ctx, members, [k.name for k in cell_keys], ctx.statistics(*_CLAIM_STATISTICS)
    )


@implements("cost.pmpm", "cost.pmpm_by_service_category")
def pmpm(ctx: BuildContext) -> exp.Select:
    """Claims by the full key joined to member months of the member-dimension part of it."""
    dims = ctx.group_by
    member_dims = tuple(d for d in dims if d in MEMBER_DIMENSIONS)
    num, den = exp.to_table("num"), exp.to_table("den")
    claims = numerator_columns(ctx.statistics(*_CLAIM_STATISTICS), ctx.clamped)
    denominators = numerator_columns(ctx.statistics(*DENOMINATOR), ctx.clamped)

    def select(category_from: str = "num") -> exp.Select:
        return exp.select(
            *[exp.column(d.value, category_from if d not in member_dims else "den") for d in dims],
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
        *member_month_ctes(ctx),
        *(
            [("lines", sql.claim_lines(ctx.period, _category_levels(ctx)))]
            if _by_line(ctx)
            else enrolled_spend_ctes(ctx)
        ),
        (
            "den",
            member_month_totals(
                member_dims, [col(d.value, MM) for d in member_dims], clamped=ctx.clamped
            ),
        ),
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
    matched = [
        *(o.copy() for o in on),
        exp.column(category, "num").eq(exp.column(category, "cats")),
    ]
    return (
        complete_select.from_(exp.alias_(exp.to_table("den"), "den"))
        .join(listed, join_type="cross")
        .join(exp.alias_(exp.to_table("num"), "num"), on=exp.and_(*matched), join_type="left")
    )


def _by_line(ctx: BuildContext) -> bool:
    """Whether a cost query groups or filters by a line dimension (a service category), so
    sums claim lines; else it sums the member-month totals other cost metrics read too (the
    same sums, computed once in a batch)."""
    used = (*ctx.group_by, *(d for d, _ in ctx.query.filters))
    return not all(d in MEMBER_DIMENSIONS for d in used)


def _category_levels(ctx: BuildContext) -> frozenset[int]:
    """Service-category levels a cost query groups or filters by (classifying lines costs)."""
    used = set(ctx.query.group_by) | {d for d, _ in ctx.query.filters}
    return frozenset(
        level
        for level, dim in ((1, Dimension.SERVICE_CATEGORY), (2, Dimension.SERVICE_CATEGORY_2))
        if dim in used
    )


# --- member cost share ------------------------------------------------------------------------

# Per cell and member (see member_cells).
_COST_SHARE = """
SELECT 1 AS claimants,
       SUM(mm.deductible_cents + mm.coinsurance_cents + mm.copay_cents
           + mm.pharmacy_member_paid_cents) AS cost_share_cents,
       SUM(mm.deductible_cents) AS deductible_cents,
       SUM(mm.coinsurance_cents) AS coinsurance_cents,
       SUM(mm.copay_cents) AS copay_cents,
       SUM(mm.pharmacy_member_paid_cents) AS pharmacy_member_paid_cents
FROM enrolled_spend AS mm
"""

COST_SHARE_CENTS = (
    "cost_share_cents",
    "deductible_cents",
    "coinsurance_cents",
    "copay_cents",
    "pharmacy_member_paid_cents",
)
COST_SHARE_STATISTICS = ("claimants", *COST_SHARE_CENTS)


@implements("cost.member_cost_share_pmpm")
def member_cost_share(ctx: BuildContext) -> exp.Select:
    """Medical deductible + coinsurance + copay and pharmacy member paid (missing: 0), all
    claim versions, in enrolled member months."""
    cell_keys = keys(ctx)
    members = one_row_per_member_month(
        per_member(sql.fill(_COST_SHARE), cell_keys, col("member_id", MM)), ctx.group_by
    )
    statistics = ctx.statistics(*COST_SHARE_STATISTICS)
    numerator = member_cells(ctx, members, [k.name for k in cell_keys], statistics)
    return member_month_cells(ctx, numerator, statistics, enrolled_spend_ctes(ctx))


# --- per-member period allowed ----------------------------------------------------------------

_MEMBER_TOTALS = """
SELECT a.member_id AS member_id, SUM(a.allowed_cents) AS allowed_cents
FROM enrolled_spend AS a
GROUP BY a.member_id
"""

_PERSONS = """
SELECT p.*, COALESCE(t.allowed_cents, 0) AS period_allowed_cents
FROM attributed AS p
LEFT JOIN member_totals AS t ON t.member_id = p.member_id
"""


def _person_ctes(ctx: BuildContext) -> list[tuple[str, exp.Expr]]:
    """CTEs ending in ``persons``: every member enrolled in the period, with the dimensions of
    their latest enrolled month and their period allowed in cents (claims counted as for
    cost.pmpm: every version, in any enrolled month of the period; 0 when none)."""
    return [
        *member_month_ctes(ctx, filtered=False),
        *enrolled_spend_ctes(ctx),
        ("member_totals", sql.fill(_MEMBER_TOTALS)),
        ("attributed", attributed_months(ctx, last_month_only=False)),
        ("persons", sql.fill(_PERSONS)),
    ]


# Per cell and histogram bin: its members, their cents and disclosure columns (the bin's
# members are its count; see metric_common.disclosure_columns).
_BINS = """
SELECT mm.allowed_bin AS allowed_histogram__bin, COUNT(*) AS allowed_histogram__count,
       SUM(mm.period_allowed_cents) AS allowed_histogram__cents,
       MIN(mm.member_key) AS allowed_histogram__kmin,
       MAX(mm.member_key) AS allowed_histogram__kmax,
       MAX(ABS(mm.period_allowed_cents)) AS allowed_histogram__top
FROM binned AS mm
"""

_BINNED = """
SELECT p.*, :bin AS allowed_bin FROM persons AS p
"""


@implements("cost.distribution")
def distribution(ctx: BuildContext) -> exp.Select:
    """Per cell and histogram bin of per-member period allowed: members and cents; the cell's
    ``members`` and ``allowed_cents`` (with their disclosure columns) repeat on each of its bin
    rows. A member's contribution to ``allowed_cents`` is their period total."""
    cell_keys = keys(ctx)
    bins = sql.fill(_BINS)
    bins = bins.select(*[k.copy() for k in cell_keys]).group_by(
        *[k.copy() for k in cell_keys], col("allowed_bin", MM)
    )
    totals = _person_totals(ctx, ("members", "allowed_cents"))
    on = [col(d.value, "b").eq(col(d.value, "t")) for d in ctx.group_by]
    query = exp.select(
        exp.Column(this=exp.Star(), table=exp.to_identifier("b")),
        *[
            col(c, "t")
            for c in numerator_columns(ctx.statistics("members", "allowed_cents"), ctx.clamped)
        ],
    ).from_(exp.alias_(exp.to_table("bins"), "b"))
    query = (
        query.join(exp.alias_(exp.to_table("totals"), "t"), on=exp.and_(*on))
        if on
        else query.join(exp.alias_(exp.to_table("totals"), "t"), join_type="cross")
    )
    binned = sql.fill(_BINNED, bin=sql.histogram_bin(col("period_allowed_cents", "p")))
    return with_ctes(
        query, [*_person_ctes(ctx), ("binned", binned), ("bins", bins), ("totals", totals)]
    )


def _person_totals(ctx: BuildContext, names: Sequence[str]) -> exp.Select:
    """Cells of ``names`` from the persons (one row per member: see member_cells), the
    persons' columns standing for their contributions: ``members`` 1, ``allowed_cents`` their
    period allowed, ``hcc_X`` and ``hcc_X_allowed_cents`` those at or above threshold X."""
    allowed = col("period_allowed_cents", "p")
    rows = exp.select(
        exp.Column(this=exp.Star(), table=exp.to_identifier("p")),
        sql.num(1).as_("members"),
        allowed.copy().as_("allowed_cents"),
    ).from_(exp.alias_(exp.to_table("persons"), "p"))
    for threshold in HCC_THRESHOLDS:
        label = hcc_label(threshold)
        at_least = allowed.copy() >= sql.num(threshold * 100)
        rows = rows.select(
            exp.Case().when(at_least, sql.num(1)).else_(sql.num(0)).as_(f"hcc_{label}"),
            exp.Case()
            .when(at_least.copy(), allowed.copy())
            .else_(sql.num(0))
            .as_(f"hcc_{label}_allowed_cents"),
            copy=False,
        )
    return member_cells(ctx, rows, [d.value for d in ctx.group_by], ctx.statistics(*names))


@implements("cost.high_cost_claimants")
def high_cost_claimants(ctx: BuildContext) -> exp.Select:
    """Members and allowed per cell, and those of members at or above each threshold; a
    member's contribution to each dollar total is their period allowed."""
    names = [s.name for s in ctx.statistics()]
    return with_ctes(_person_totals(ctx, names), _person_ctes(ctx))


# --- out-of-network share ---------------------------------------------------------------------

# Per cell and member (see member_cells).
_NETWORK = """
SELECT 1 AS claimants, SUM(mm.out_of_network_allowed_cents) AS out_of_network_allowed_cents,
       SUM(mm.known_network_allowed_cents) AS known_network_allowed_cents
FROM enrolled_spend AS mm
WHERE mm.medical_rows > 0
"""

NETWORK_CENTS = ("out_of_network_allowed_cents", "known_network_allowed_cents")


@implements("cost.out_of_network_share")
def out_of_network_share(ctx: BuildContext) -> exp.Select:
    """Medical rows (all versions) in enrolled member months: allowed out of network and
    allowed with a known network flag. Claimants are members with a medical row counted in the
    cell, whatever its network flag.

    A ratio of two dollar totals, but both totals are released, so each is protected like
    any other."""
    cell_keys = keys(ctx)
    members = one_row_per_member_month(
        per_member(sql.fill(_NETWORK), cell_keys, col("member_id", MM)), ctx.group_by
    )
    query = member_cells(ctx, members, [k.name for k in cell_keys], ctx.statistics())
    return with_ctes(query, [*member_month_ctes(ctx), *enrolled_spend_ctes(ctx)])
