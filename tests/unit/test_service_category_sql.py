"""The node's service-category classification (one SQL CASE) against the pandas oracle's, line
by line, on lines built to meet every rule of the code lists, under either claim type."""

from __future__ import annotations

import duckdb
import pandas as pd
from sqlglot import exp

from carrier_node.query import sql
from fedoversight.codelists import (
    CodeCondition,
    ServiceCategoryRule,
    drg_types,
    service_category_rules,
)
from fedoversight.testing.oracle import service_categories_of

FIELDS = ("claim_type", "place_of_service", "bill_type", "revenue_code", "hcpcs", "drg")
CLAIM_TYPES = ("institutional", "professional")


def _values(cond: CodeCondition | None) -> list[str | None]:
    """Codes meeting ``cond`` (each listed code, each range's ends) and one that does not."""
    if cond is None:
        return [None]
    out: list[str | None] = [*cond.codes[:3]]
    for low, high in cond.ranges[:3]:
        out += [low, high]
    return out


def _lines_meeting(rule: ServiceCategoryRule) -> list[dict[str, str | None]]:
    drgs: list[str | None] = _values(rule.drg)
    if rule.drg_type is not None:
        drgs += sorted(c for c, kind in drg_types().items() if kind == rule.drg_type)[:3]
    lines = []
    for claim_type in CLAIM_TYPES:  # its own type, and the other (met by type-free rules only)
        for prefix in rule.bill_type_prefix or (None,):
            for field, values in (
                ("place_of_service", _values(rule.place_of_service)),
                ("revenue_code", _values(rule.revenue_code)),
                ("hcpcs", _values(rule.hcpcs)),
                ("drg", drgs),
            ):
                for value in values:
                    line = {
                        "claim_type": claim_type,
                        "bill_type": None if prefix is None else (prefix + "1")[:3],
                        "place_of_service": _values(rule.place_of_service)[0],
                        "revenue_code": _values(rule.revenue_code)[0],
                        "hcpcs": _values(rule.hcpcs)[0],
                        "drg": drgs[0],
                    }
                    line[field] = value
                    lines.append(line)
    return lines


def test_sql_classification_matches_the_oracle_on_every_rule() -> None:
    lines = pd.DataFrame(
        [line for rule in service_category_rules() for line in _lines_meeting(rule)],
        columns=list(FIELDS),
    )
    assert len(lines) > 200
    con = duckdb.connect(":memory:")
    con.register("lines", lines.assign(line_number=range(len(lines))))
    query = (
        exp.select(
            sql.service_category("c", 1).as_("service_category"),
            sql.service_category("c", 2).as_("service_category_2"),
        )
        .from_(exp.alias_(exp.to_table("lines"), "c"))
        .order_by(exp.column("line_number", "c"))
    )
    got = con.sql(query.sql(dialect="duckdb")).fetchall()
    expected = service_categories_of(lines)
    want = list(zip(expected["service_category"], expected["service_category_2"], strict=True))
    assert got == want
    # Every level-1 category is reached, under both claim types between them.
    assert {c for c, _ in got} >= {"inpatient", "outpatient", "office-based", "ancillary"}
