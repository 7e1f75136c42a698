"""Plausibility rules of the carrier data schema: values that parse and fit the schema's types
but that a claims analyst would not believe (a negative amount on a paid line, a fill in 2099,
``days_supply = -5``, the same claim line twice, a claim before the member was born).

Each rule is declared once, here: its name, table, the column it reports, its severity, a
description, the schema version (:data:`fedoversight.schema.SCHEMA_VERSION`) it was written for,
and the rows it flags as a sqlglot expression over the table's columns in their canonical types.
``carrier-node check`` evaluates them on the carrier's files or pushed down into its warehouse
(:mod:`carrier_node.data.plausibility`); ``docs/data-dictionary.md`` lists them
(``scripts/gen_docs.py``). A rule never excludes a row: it reports how many rows it flags and
where they are.

What an expression may use besides the table's columns:

- :data:`AS_OF`, a placeholder for the date the extract is checked against (``--as-of``,
  default today);
- :data:`ROW`, the row's position in its source (a file's row number, or what the warehouse
  offers), which orders rows within a window so that "an earlier row" is well defined;
- :data:`MEMBER_BIRTH_DATE`, the member's earliest ``eligibility.birth_date`` (NULL when the
  member has no eligibility row);
- the derived columns the rule declares in :attr:`Rule.derived` (window functions).

A row is flagged where the expression is true (NULL flags nothing: a rule about a column the
extract leaves empty or lacks says nothing).

Severities: ``error`` for values that cannot be right (every figure computed from such a row is
wrong), ``warning`` for values that are possible but unusual enough that a carrier should look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlglot import exp

from fedoversight.schema import (
    ELIGIBILITY,
    MEDICAL_CLAIMS,
    PHARMACY_CLAIMS,
    SCHEMA_VERSION,
    ColumnType,
    Table,
)

Severity = Literal["error", "warning"]

#: The date the extract is checked against (replaced by a date literal before a rule runs).
AS_OF = exp.Placeholder(this="as_of")
#: The row's position in its source; orders the rows of a window.
ROW = "__row"
#: The member's earliest ``eligibility.birth_date``, joined in by the evaluator.
MEMBER_BIRTH_DATE = "__member_birth_date"

#: Dates before this are not believed anywhere.
EARLIEST_DATE = "1900-01-01"
#: Oldest plausible age, in years.
MAX_AGE_YEARS = 120
#: The longest plausible ``days_supply`` of one fill.
MAX_DAYS_SUPPLY = 365
#: The largest plausible ``quantity`` of one fill (metric decimal units).
MAX_QUANTITY = 100_000
#: The longest plausible service span of one claim line, in days.
MAX_SERVICE_DAYS = 366

#: Statuses whose amounts are the plan's own (never negative).
_FORWARD = ("paid", "adjusted", "denied")


@dataclass(frozen=True)
class Rule:
    """One plausibility rule of one table."""

    name: str
    table: str
    #: The column a finding names (the one to look at).
    column: str
    severity: Severity
    description: str
    #: The rows flagged: a boolean expression over the table's columns (canonical types),
    #: :data:`AS_OF`, :data:`ROW`, :data:`MEMBER_BIRTH_DATE` and :attr:`derived`.
    flags: exp.Expr
    #: Columns computed over the whole table first (name, window expression).
    derived: tuple[tuple[str, exp.Expr], ...] = ()
    #: The schema version the rule was written for.
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the rule: table, column and name."""
        return self.table, self.column, self.name


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _date(iso: str) -> exp.Expr:
    return exp.cast(exp.Literal.string(iso), exp.DataType.build("DATE"))


def _num(value: int) -> exp.Expr:
    return exp.Literal.number(value)


def _status_in(*statuses: str) -> exp.Expr:
    return _col("claim_status").isin(*statuses)


def _window(
    function: exp.Expr,
    partition: Iterable[str],
    order: Iterable[str],
    spec: exp.WindowSpec | None = None,
) -> exp.Window:
    return exp.Window(
        this=function,
        partition_by=[_col(c) for c in partition],
        order=exp.Order(expressions=[exp.Ordered(this=_col(c)) for c in order]),
        spec=spec,
    )


def _repeats(key: Iterable[str]) -> exp.Expr:
    """The rank of a row among the rows of its key, in source order (1: the first)."""
    return _window(exp.RowNumber(), key, (ROW,))


def _date_window_rules(table: Table, future: Iterable[str]) -> list[Rule]:
    """No date of the table before 1900; the named ones not after the as-of date."""
    rules: list[Rule] = []
    future = set(future)
    for column in table.columns:
        if column.type is not ColumnType.DATE:
            continue
        rules.append(
            Rule(
                "date_before_1900",
                table.name,
                column.name,
                "error",
                f"`{column.name}` is before {EARLIEST_DATE}.",
                exp.LT(this=_col(column.name), expression=_date(EARLIEST_DATE)),
            )
        )
        if column.name in future:
            rules.append(
                Rule(
                    "date_in_future",
                    table.name,
                    column.name,
                    "error",
                    f"`{column.name}` is after the date the extract is checked against"
                    " (`--as-of`, default today).",
                    exp.GT(this=_col(column.name), expression=AS_OF.copy()),
                )
            )
    return rules


def _amount_sign_rules(table: Table, amounts: Iterable[str]) -> list[Rule]:
    """No negative amount on a forward row; no positive amount on a reversal."""
    rules: list[Rule] = []
    for name in amounts:
        table.column(name)  # a rule names columns of the schema only
        amount = _col(name)
        rules.append(
            Rule(
                "negative_amount",
                table.name,
                name,
                "error",
                f"`{name}` is negative on a paid, adjusted or denied row (only a reversal"
                " negates amounts).",
                exp.and_(
                    _status_in(*_FORWARD),
                    exp.LT(this=amount.copy(), expression=_num(0)),
                ),
            )
        )
        rules.append(
            Rule(
                "positive_amount_on_reversal",
                table.name,
                name,
                "error",
                f"`{name}` is positive on a reversed row (a reversal negates the row it takes"
                " back).",
                exp.and_(
                    _status_in("reversed"),
                    exp.GT(this=amount.copy(), expression=_num(0)),
                ),
            )
        )
    return rules


def _claim_rules(table: Table, service_date: str) -> list[Rule]:
    """Rules the two claim tables share."""
    paid, allowed = _col("paid_amount"), _col("allowed_amount")
    return [
        Rule(
            "paid_on_denied",
            table.name,
            "paid_amount",
            "warning",
            "A denied row has a non-zero `paid_amount`.",
            exp.and_(_status_in("denied"), exp.NEQ(this=paid.copy(), expression=_num(0))),
        ),
        Rule(
            "paid_exceeds_allowed",
            table.name,
            "paid_amount",
            "warning",
            "The plan paid more than it allowed (`|paid_amount| > |allowed_amount|`).",
            exp.GT(this=exp.Abs(this=paid.copy()), expression=exp.Abs(this=allowed.copy())),
        ),
        Rule(
            "paid_before_service",
            table.name,
            "paid_date",
            "warning",
            f"`paid_date` is before `{service_date}`.",
            exp.LT(this=_col("paid_date"), expression=_col(service_date)),
        ),
        Rule(
            "service_before_birth",
            table.name,
            service_date,
            "warning",
            f"`{service_date}` is before the member's `eligibility.birth_date`.",
            exp.LT(this=_col(service_date), expression=_col(MEMBER_BIRTH_DATE)),
        ),
    ]


def _eligibility_rules() -> list[Rule]:
    t = ELIGIBILITY
    start, end = _col("enrollment_start_date"), _col("enrollment_end_date")
    birth, death = _col("birth_date"), _col("death_date")
    open_end = exp.func("coalesce", end.copy(), _date("9999-12-31"))
    earlier_spans_end = _window(
        exp.Max(this=open_end),
        ("member_id",),
        ("enrollment_start_date", ROW),
        exp.WindowSpec(
            kind="ROWS",
            start="UNBOUNDED",
            start_side="PRECEDING",
            end=_num(1),
            end_side="PRECEDING",
        ),
    )
    first_birth = _window(exp.FirstValue(this=birth.copy()), ("member_id",), (ROW,))
    last_day = exp.func("coalesce", end.copy(), AS_OF.copy())
    age_limit = exp.Add(
        this=birth.copy(),
        expression=exp.Interval(this=exp.Literal.string(str(MAX_AGE_YEARS)), unit=exp.var("YEAR")),
    )
    return [
        *_date_window_rules(t, ("birth_date", "death_date")),
        Rule(
            "death_before_birth",
            t.name,
            "death_date",
            "error",
            "`death_date` is before `birth_date`.",
            exp.LT(this=death.copy(), expression=birth.copy()),
        ),
        Rule(
            "age_over_120",
            t.name,
            "birth_date",
            "warning",
            f"The member is over {MAX_AGE_YEARS} years old on the span's last day (the as-of"
            " date for an open span).",
            exp.LT(
                this=age_limit,
                expression=exp.func("least", last_day, AS_OF.copy()),
            ),
        ),
        Rule(
            "enrollment_before_birth",
            t.name,
            "enrollment_start_date",
            "warning",
            "The span starts before the member's `birth_date`.",
            exp.LT(this=start.copy(), expression=birth.copy()),
        ),
        Rule(
            "enrollment_after_death",
            t.name,
            "enrollment_start_date",
            "warning",
            "The span starts after the member's `death_date`.",
            exp.GT(this=start.copy(), expression=death.copy()),
        ),
        Rule(
            "overlapping_spans",
            t.name,
            "enrollment_start_date",
            "warning",
            "The span starts on or before the last day of an earlier-starting (or same-day)"
            " span of the same member; the later row is reported. Where spans overlap, the"
            " latest-starting one gives a month's plan, and two spans starting the same day"
            " leave it undefined.",
            exp.LTE(this=start.copy(), expression=_col("__earlier_spans_end")),
            derived=(("__earlier_spans_end", earlier_spans_end),),
        ),
        Rule(
            "birth_date_differs",
            t.name,
            "birth_date",
            "warning",
            "The member's spans disagree on `birth_date`; rows differing from the member's"
            " first row are reported (ages use the latest-starting span's).",
            exp.NEQ(this=birth.copy(), expression=_col("__first_birth_date")),
            derived=(("__first_birth_date", first_birth),),
        ),
    ]


def _medical_rules() -> list[Rule]:
    t = MEDICAL_CLAIMS
    start, end = _col("claim_start_date"), _col("claim_end_date")
    key = ("claim_id", "claim_line", "claim_version")
    longest = exp.Add(
        this=start.copy(),
        expression=exp.Interval(
            this=exp.Literal.string(str(MAX_SERVICE_DAYS)), unit=exp.var("DAY")
        ),
    )
    return [
        *_date_window_rules(
            t,
            ("claim_start_date", "claim_end_date", "admission_date", "discharge_date", "paid_date"),
        ),
        *_amount_sign_rules(
            t,
            (
                "charge_amount",
                "allowed_amount",
                "paid_amount",
                "deductible_amount",
                "coinsurance_amount",
                "copay_amount",
            ),
        ),
        *_claim_rules(t, "claim_start_date"),
        Rule(
            "end_before_start",
            t.name,
            "claim_end_date",
            "error",
            "`claim_end_date` is before `claim_start_date`.",
            exp.LT(this=end.copy(), expression=start.copy()),
        ),
        Rule(
            "admission_after_discharge",
            t.name,
            "discharge_date",
            "error",
            "`discharge_date` is before `admission_date`.",
            exp.LT(this=_col("discharge_date"), expression=_col("admission_date")),
        ),
        Rule(
            "service_span_too_long",
            t.name,
            "claim_end_date",
            "warning",
            f"The line's service span is longer than {MAX_SERVICE_DAYS} days.",
            exp.GT(this=end.copy(), expression=longest),
        ),
        Rule(
            "line_number_not_positive",
            t.name,
            "claim_line",
            "warning",
            "`claim_line` is zero or negative.",
            exp.LT(this=_col("claim_line"), expression=_num(1)),
        ),
        Rule(
            "version_not_positive",
            t.name,
            "claim_version",
            "warning",
            "`claim_version` is zero or negative (versions count from 1).",
            exp.LT(this=_col("claim_version"), expression=_num(1)),
        ),
        Rule(
            "duplicate_claim_line",
            t.name,
            "claim_id",
            "warning",
            "The row repeats an earlier row's (claim_id, claim_line, claim_version); the"
            " repeats are reported and both count in dollar totals.",
            exp.GT(this=_col("__key_rank"), expression=_num(1)),
            derived=(("__key_rank", _repeats(key)),),
        ),
    ]


def _pharmacy_rules() -> list[Rule]:
    t = PHARMACY_CLAIMS
    supply, quantity = _col("days_supply"), _col("quantity")
    reversal = _status_in("reversed")
    # A reversal may carry the negated days and quantity of the fill it takes back.
    signed_supply = exp.Case(
        ifs=[exp.If(this=reversal.copy(), true=exp.Abs(this=supply.copy()))],
        default=supply.copy(),
    )
    signed_quantity = exp.Case(
        ifs=[exp.If(this=reversal.copy(), true=exp.Abs(this=quantity.copy()))],
        default=quantity.copy(),
    )
    cost_share = exp.Add(this=_col("paid_amount"), expression=_col("member_paid_amount"))
    return [
        *_date_window_rules(t, ("fill_date", "paid_date")),
        *_amount_sign_rules(t, ("allowed_amount", "paid_amount", "member_paid_amount")),
        *_claim_rules(t, "fill_date"),
        Rule(
            "days_supply_out_of_range",
            t.name,
            "days_supply",
            "error",
            f"`days_supply` is not between 1 and {MAX_DAYS_SUPPLY} (a reversal may negate it).",
            exp.Not(this=exp.Between(this=signed_supply, low=_num(1), high=_num(MAX_DAYS_SUPPLY))),
        ),
        Rule(
            "quantity_out_of_range",
            t.name,
            "quantity",
            "error",
            f"`quantity` is not above 0 and at most {MAX_QUANTITY:,} units (a reversal may"
            " negate it).",
            exp.or_(
                exp.LTE(this=signed_quantity, expression=_num(0)),
                exp.GT(this=signed_quantity.copy(), expression=_num(MAX_QUANTITY)),
            ),
        ),
        Rule(
            "cost_share_mismatch",
            t.name,
            "member_paid_amount",
            "warning",
            "`allowed_amount` is not `paid_amount + member_paid_amount`.",
            exp.NEQ(this=_col("allowed_amount"), expression=cost_share),
        ),
        Rule(
            "duplicate_fill",
            t.name,
            "claim_id",
            "warning",
            "The row repeats an earlier row's (claim_id, claim_status): the same fill"
            " delivered twice; both count in dollar totals.",
            exp.GT(this=_col("__key_rank"), expression=_num(1)),
            derived=(("__key_rank", _repeats(("claim_id", "claim_status"))),),
        ),
    ]


RULES: tuple[Rule, ...] = (*_eligibility_rules(), *_medical_rules(), *_pharmacy_rules())


def rules_of(table: str) -> tuple[Rule, ...]:
    """The rules of one table, in declaration order."""
    return tuple(r for r in RULES if r.table == table)


def _check_declarations() -> None:
    keys = [r.key for r in RULES]
    if len(set(keys)) != len(keys):  # pragma: no cover - a declaration mistake
        raise RuntimeError("two plausibility rules share a table, column and name")


_check_declarations()
