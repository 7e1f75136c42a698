"""Quality measures: breast cancer screening, HbA1c testing and statin use for members with
diabetes. Eligibility age is whole years on the period's last day; a member's keys come from
the member month of the period's last month, in which they must be enrolled."""

from __future__ import annotations

from sqlglot import exp

from carrier_node.query import sql
from carrier_node.query.aggregate import (
    BuildContext,
    attributed_months,
    col,
    member_cells,
    member_month_ctes,
    with_ctes,
)
from carrier_node.query.registry import implements
from fedoversight.periods import Month

MAMMOGRAPHY_RANGES = (("77061", "77063"), ("77065", "77067"))
SCREENING_LOOKBACK_MONTHS = 26  # the 27 months ending on the period's last day
SCREENING_AGES = (50, 74)
DIABETES_PREFIXES = ("E10", "E11")
DIAGNOSIS_COLUMNS = tuple(f"dx{i}" for i in range(1, 11))
HBA1C_HCPCS = ("83036", "83037")
DIABETES_AGES = (18, 75)
STATIN_AGES = (40, 75)
ANTIDIABETIC = "antidiabetic"
STATIN = "statin"


def _months_before(month: Month, n: int) -> Month:
    index = month.year * 12 + month.month - 1 - n
    return Month(index // 12, index % 12 + 1)


def _aged(ctx: BuildContext, ages: tuple[int, int]) -> exp.Expr:
    age = sql.age_on(col("birth_date", "a"), ctx.period.end_date)
    return exp.Between(this=age, low=sql.num(ages[0]), high=sql.num(ages[1]))


def _persons_query(ctx: BuildContext, measure: str, ctes: list[tuple[str, exp.Expr]]) -> exp.Select:
    """The measure's cells from ``measure``, one row per eligible person (see member_cells)
    with ``eligible`` 1 and the numerator's flag."""
    rows = sql.fill(measure)
    query = member_cells(ctx, rows, [d.value for d in ctx.group_by], ctx.statistics())
    return with_ctes(
        query,
        [
            *member_month_ctes(ctx, filtered=False, spans=True),  # sex, birth date
            ("attributed", attributed_months(ctx, last_month_only=True)),
            *ctes,
        ],
    )


# --- breast cancer screening ------------------------------------------------------------------

_WOMEN = """
SELECT a.*,
       CASE WHEN EXISTS (SELECT 1 FROM mammograms AS s WHERE s.member_id = a.member_id)
            THEN 1 ELSE 0 END AS screened
FROM attributed AS a
WHERE a.sex = 'F' AND :aged
  AND a.member_id IN (
    SELECT c.member_id FROM mm AS c GROUP BY c.member_id HAVING COUNT(*) = :months
  )
"""

_SCREENING = """
SELECT w.*, 1 AS eligible FROM women AS w
"""


@implements("quality.breast_cancer_screening")
def breast_cancer_screening(ctx: BuildContext) -> exp.Select:
    """Women 50–74 enrolled every month of the period; those with a final-action mammogram
    line dated in the 27 months ending on the period's last day."""
    first = _months_before(ctx.period.last, SCREENING_LOOKBACK_MONTHS).first_day

    def mammogram(alias: str) -> exp.Expr:
        dated = exp.Between(
            this=col("claim_start_date", alias),
            low=sql.date_lit(first),
            high=sql.date_lit(ctx.period.end_date),
        )
        hcpcs = exp.or_(
            *[sql.code_range(col("hcpcs", alias), lo, hi) for lo, hi in MAMMOGRAPHY_RANGES]
        )
        return exp.and_(dated, exp.paren(hcpcs))

    women = sql.fill(
        _WOMEN, aged=_aged(ctx, SCREENING_AGES), months=sql.num(len(ctx.period.months()))
    )
    return _persons_query(
        ctx,
        _SCREENING,
        [sql.later_versions(), ("mammograms", sql.final_action_lines(mammogram)), ("women", women)],
    )


# --- HbA1c testing ----------------------------------------------------------------------------

_DIABETIC = """
SELECT d.member_id AS member_id
FROM diagnosis_lines AS d
GROUP BY d.member_id
HAVING COUNT(DISTINCT CASE WHEN :outpatient THEN d.claim_start_date END) >= 2
    OR SUM(CASE WHEN :inpatient THEN 1 ELSE 0 END) >= 1
"""

_DIABETES_ELIGIBLE = """
SELECT a.*,
       CASE WHEN EXISTS (SELECT 1 FROM hba1c_lines AS t WHERE t.member_id = a.member_id)
            THEN 1 ELSE 0 END AS tested
FROM attributed AS a
WHERE :aged AND a.member_id IN (SELECT d.member_id FROM diabetic AS d)
"""

_TESTING = """
SELECT d.*, 1 AS eligible FROM diabetes_eligible AS d
"""


def _diabetes_diagnosis(alias: str) -> exp.Expr:
    return exp.or_(
        *[
            sql.starts_with(col(dx, alias), prefix)
            for dx in DIAGNOSIS_COLUMNS
            for prefix in DIABETES_PREFIXES
        ]
    )


@implements("quality.diabetes_hba1c_testing")
def diabetes_hba1c_testing(ctx: BuildContext) -> exp.Select:
    """Members 18–75 with E10/E11 on two outpatient dates or one inpatient line in the period;
    those with a final-action HbA1c test line in the period."""

    def diagnosis(alias: str) -> exp.Expr:
        dated = sql.in_period(col("claim_start_date", alias), ctx.period)
        return exp.and_(dated, exp.paren(_diabetes_diagnosis(alias)))

    def test(alias: str) -> exp.Expr:
        dated = sql.in_period(col("claim_start_date", alias), ctx.period)
        return exp.and_(dated, sql.codes_in(col("hcpcs", alias), HBA1C_HCPCS))

    bill_type = col("bill_type", "d")
    diabetic = sql.fill(
        _DIABETIC,
        outpatient=sql.not_starting_with(bill_type, "11"),
        inpatient=sql.starts_with(bill_type.copy(), "11"),
    )
    eligible = sql.fill(_DIABETES_ELIGIBLE, aged=_aged(ctx, DIABETES_AGES))
    return _persons_query(
        ctx,
        _TESTING,
        [
            sql.later_versions(),
            ("diagnosis_lines", sql.final_action_lines(diagnosis)),
            ("diabetic", diabetic),
            ("hba1c_lines", sql.final_action_lines(test)),
            ("diabetes_eligible", eligible),
        ],
    )


# --- statin use -------------------------------------------------------------------------------

_STATIN_ELIGIBLE = """
SELECT a.*, CASE WHEN s.statin_fills > 0 THEN 1 ELSE 0 END AS on_statin
FROM attributed AS a
JOIN (
  SELECT x.member_id AS member_id,
         COUNT(DISTINCT CASE WHEN x.drug_class = :antidiabetic THEN x.claim_id END)
           AS antidiabetic_fills,
         COUNT(DISTINCT CASE WHEN x.drug_class = :statin THEN x.claim_id END) AS statin_fills
  FROM measure_fills AS x
  GROUP BY x.member_id
) AS s ON s.member_id = a.member_id
WHERE :aged AND s.antidiabetic_fills >= 2
"""

_STATIN = """
SELECT s.*, 1 AS eligible FROM statin_eligible AS s
"""


@implements("quality.statin_use_diabetes")
def statin_use_diabetes(ctx: BuildContext) -> exp.Select:
    """Members 40–75 with two or more final-action antidiabetic fills in the period; those
    with a final-action statin fill in the period."""
    classes = (ANTIDIABETIC, STATIN)
    fills = sql.final_fills(ctx.period, lambda a: sql.codes_in(col("drug_class", a), classes))
    eligible = sql.fill(
        _STATIN_ELIGIBLE,
        antidiabetic=sql.lit(ANTIDIABETIC),
        statin=sql.lit(STATIN),
        aged=_aged(ctx, STATIN_AGES),
    )
    return _persons_query(ctx, _STATIN, [("measure_fills", fills), ("statin_eligible", eligible)])
