"""The node's metric builders on small hand-built tables, with expected numbers worked out by
hand from the catalogue's definitions."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import sqlglot

from carrier_node.cells import RawCell
from carrier_node.data.files import FileSource
from carrier_node.data.validation import INT64_SUM_LIMIT
from carrier_node.disclosure import protect_table
from carrier_node.policy import Policy
from carrier_node.query import metrics
from carrier_node.query.aggregate import BuildContext, histogram_columns
from carrier_node.query.engine import Engine
from fedoversight.catalogue import METRICS, StatKind, get_metric
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec, Status
from fedoversight.errors import DataSourceError
from fedoversight.histogram import EDGES_CENTS, N_BINS, Histogram, bin_index
from fedoversight.periods import Period
from fedoversight.schema import TABLES, ColumnType
from fedoversight.testing import oracle

CARRIER = "c042"
Q1 = Period.parse("2026Q1")
JANUARY = Period.parse("2026-01")
YEAR = Period.parse("2026")

_ARROW = {
    ColumnType.CODE: pa.string(),
    ColumnType.DATE: pa.date32(),
    ColumnType.MONEY: pa.decimal128(18, 2),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.INT: pa.int64(),
    ColumnType.NUMBER: pa.float64(),
}


class MemorySource:
    """The node's data source contract over in-memory DuckDB tables of the canonical types."""

    dialect = "duckdb"

    def __init__(self, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        self.con = duckdb.connect(":memory:")
        present = set()
        bounds: list[int] = []
        for table in TABLES:
            data = rows.get(table.name)
            if data is None and not table.required:
                continue
            data = data or []
            columns = {}
            for c in table.columns:
                values = [r.get(c.name) for r in data]
                if c.type is ColumnType.MONEY:
                    values = [None if v is None else Decimal(str(v)) for v in values]
                elif c.type is ColumnType.DATE:
                    values = [None if v is None else dt.date.fromisoformat(v) for v in values]
                columns[c.name] = pa.array(values, type=_ARROW[c.type])
            self.con.register(f"input_{table.name}", pa.table(columns))
            self.con.execute(f"CREATE TABLE {table.name} AS SELECT * FROM input_{table.name}")
            present.add(table.name)
            cents = [
                abs(int(v * 100))
                for c in table.columns
                if c.type is ColumnType.MONEY
                for v in columns[c.name].to_pylist()
                if v is not None
            ]
            bounds.append(len(data) * max(cents, default=0))
        self.tables = frozenset(present)
        #: As the file source tells it (see validation.money_sums_fit_int64): the engine's
        #: tests run the 64-bit sums wherever the data allows them, as a carrier's node does.
        self.money_sums_fit_int64 = all(b <= INT64_SUM_LIMIT for b in bounds)

    def execute_arrow(self, sql: str) -> pa.Table:
        table: pa.Table = self.con.cursor().sql(sql).to_arrow_table()
        return table

    def snapshot(self) -> str:
        return "memory"

    @contextlib.contextmanager
    def session(self) -> Iterator[MemorySession]:
        """A batch's session: its temporary tables live on one cursor."""
        cursor = self.con.cursor()
        try:
            yield MemorySession(cursor, self.money_sums_fit_int64)
        finally:
            cursor.close()


class MemorySession:
    def __init__(self, cursor: duckdb.DuckDBPyConnection, money_sums_fit_int64: bool) -> None:
        self.cursor = cursor
        self.money_sums_fit_int64 = money_sums_fit_int64

    def create_table(self, name: str, statement: str) -> None:
        self.cursor.execute(statement)

    def drop_table(self, name: str) -> None:
        drop = sqlglot.exp.Drop(tables=[sqlglot.exp.to_table(name)], kind="TABLE")
        self.cursor.execute(drop.sql(dialect="duckdb"))

    def execute_arrow(self, sql: str) -> pa.Table:
        table: pa.Table = self.cursor.sql(sql).to_arrow_table()
        return table


class Data:
    """Rows of a carrier, built with defaults so each test states only what matters."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {
            "eligibility": [],
            "medical_claims": [],
            "pharmacy_claims": [],
        }
        self._ids = itertools.count(1)

    def member(
        self, member_id: str, start: str = "2020-01-01", end: str | None = None, **fields: Any
    ) -> Data:
        row = {
            "member_id": member_id,
            "program": "FEHB",
            "plan_code": "P1",
            "birth_date": "1980-06-15",
            "sex": "F",
            "state": "VA",
            "enrollment_start_date": start,
            "enrollment_end_date": end,
            "medicare_primary": False,
            "enrollee_type": "active",
        }
        self.rows["eligibility"].append(row | fields)
        return self

    def medical(self, member_id: str, start: str, **fields: Any) -> Data:
        row = {
            "claim_id": f"m{next(self._ids)}",
            "claim_line": 1,
            "claim_status": "paid",
            "member_id": member_id,
            "claim_type": "professional",
            "claim_start_date": start,
            "claim_end_date": start,
            "place_of_service": "11",
            "hcpcs": "99999",
            "charge_amount": "0",
            "allowed_amount": "0",
            "paid_amount": "0",
            "in_network": True,
        }
        self.rows["medical_claims"].append(row | fields)
        return self

    def stay_line(
        self, member_id: str, start: str, end: str, facility: str = "F1", **fields: Any
    ) -> Data:
        line = {
            "claim_end_date": end,
            "claim_type": "institutional",
            "bill_type": "111",
            "place_of_service": None,
            "facility_npi": facility,
        }
        return self.medical(member_id, start, **(line | fields))

    def fill(self, member_id: str, date: str, **fields: Any) -> Data:
        row = {
            "claim_id": f"r{next(self._ids)}",
            "claim_status": "paid",
            "member_id": member_id,
            "fill_date": date,
            "ndc": "00000000001",
            "drug_class": "statin",
            "quantity": 30.0,
            "days_supply": 30,
            "generic": True,
            "channel": "retail",
            "allowed_amount": "0",
            "paid_amount": "0",
            "member_paid_amount": "0",
        }
        self.rows["pharmacy_claims"].append(row | fields)
        return self

    def rebate(self, quarter: str, amount: str, drug_class: str | None = None) -> Data:
        self.rows.setdefault("rebates", []).append(
            {"quarter": quarter, "drug_class": drug_class, "rebate_amount": amount}
        )
        return self


Cells = dict[tuple[str, ...], dict[str, Any]]


def run(
    data: Data,
    metric: str,
    period: Period = Q1,
    group_by: Iterable[D] = (),
    filters: Mapping[D, tuple[str, ...]] | None = None,
    parameters: Mapping[str, float] | None = None,
) -> Cells:
    """Cells by key values: statistic name -> value."""
    query = QuerySpec(
        metric,
        1,
        tuple(group_by),
        tuple((filters or {}).items()),
        tuple((parameters or {}).items()),
    )
    table = Engine(MemorySource(data.rows), CARRIER).evaluate(period, query)
    return {tuple(v for _, v in cell.key): dict(cell.values) for cell in table.cells}


def one(cells: Cells) -> dict[str, Any]:
    assert list(cells) == [()], cells
    return cells[()]


# --- every metric has a builder whose SQL renders for both engines --------------------------


def _widest_query(spec: Any) -> QuerySpec:
    dims = sorted(d for d in spec.dimensions if d not in spec.one_of)
    if spec.one_of:
        dims.append(sorted(spec.one_of)[0])
    filters = ((dims[0], ("x1", "x2")),) if dims else ()
    return QuerySpec(spec.name, spec.version, tuple(dims), filters)


def test_every_metric_has_a_builder_rendering_for_duckdb_and_postgres() -> None:
    assert metrics.implemented() == {m.key for m in METRICS} and metrics.missing() == ()
    engine = Engine(MemorySource(Data().member("a").rows), CARRIER)
    for spec in METRICS:
        query = _widest_query(spec)  # every dimension and a filter
        expression = metrics.build(BuildContext(CARRIER, YEAR, query))
        text = expression.sql(dialect="postgres")
        assert ":" not in text.replace("::", ""), f"{spec.name}: a placeholder left"
        for s in spec.statistics:
            names = histogram_columns(s.name) if s.kind is StatKind.HISTOGRAM else [s.name]
            assert all(name in text for name in names), f"{spec.name} lacks {s.name}"
        # The DuckDB rendering runs (the filter's values select nothing here).
        assert engine.evaluate(YEAR, query).cells == ()


# --- enrollment -----------------------------------------------------------------------------


def test_churn_adds_terms_and_deaths_look_outside_the_period() -> None:
    data = (
        Data()
        .member("stay", "2025-06-01")  # enrolled throughout: neither
        .member("brief", "2026-02-10", "2026-02-20")  # add and term in February
        .member("died", "2024-01-01", "2026-03-05", death_date="2026-03-05")
        .member("switch", "2025-01-01", "2026-01-31", plan_code="P1")
        .member("switch", "2026-02-01", None, plan_code="P2")  # no add: enrolled in January
        .member("new", "2026-01-15")  # add in January: December is looked at
        .member("leaves", "2025-01-01", "2026-03-31")  # term in March: April is looked at
        .member("gap", "2025-01-01", "2026-01-31")
        .member("gap", "2026-03-01", None)  # term in January, add again in March
    )
    cells = run(data, "enrollment.churn", group_by=[D.MONTH])
    assert cells[("2026-01",)] == {
        "member_months": 6,
        "members": 6,
        "adds": 1,
        "terms": 1,
        "deaths": 0,
    }
    assert cells[("2026-02",)] == {
        "member_months": 6,
        "members": 6,
        "adds": 1,
        "terms": 1,
        "deaths": 0,
    }
    assert cells[("2026-03",)] == {
        "member_months": 6,
        "members": 6,
        "adds": 1,
        "terms": 2,
        "deaths": 1,
    }
    # Over the quarter counts are distinct members; the switcher's February month is P2's.
    by_plan = run(data, "enrollment.churn", group_by=[D.PLAN_CODE, D.MONTH])
    assert by_plan[("P2", "2026-02")] == {
        "member_months": 1,
        "members": 1,
        "adds": 0,
        "terms": 0,
        "deaths": 0,
    }
    total = one(run(data, "enrollment.churn"))
    assert total == {"member_months": 18, "members": 7, "adds": 3, "terms": 4, "deaths": 1}
    assert run(data, "enrollment.churn", filters={D.PLAN_CODE: ("P2",)}) == {
        (): {"member_months": 2, "members": 1, "adds": 0, "terms": 0, "deaths": 0}
    }


# --- cost -----------------------------------------------------------------------------------


def test_member_cost_share_sums_all_versions_with_missing_amounts_as_zero() -> None:
    data = (
        Data()
        .member("a")
        .member("b", "2026-03-01")
        .medical("a", "2026-01-10", deductible_amount="10.00", coinsurance_amount="2.50")
        .medical("a", "2026-02-03", copay_amount="20.00")
        .medical("a", "2026-04-01", copay_amount="99.00")  # after the period
        .medical("b", "2026-01-20", copay_amount="7.00")  # b is not enrolled in January
        .fill("a", "2026-01-11", claim_id="rx1", member_paid_amount="5.00")
        .fill(
            "a", "2026-01-11", claim_id="rx1", claim_status="reversed", member_paid_amount="-5.00"
        )
        .fill("b", "2026-03-02", member_paid_amount="3.10")
    )
    cells = run(data, "cost.member_cost_share_pmpm", group_by=[D.MONTH])
    assert cells[("2026-01",)] == {
        "member_months": 1,
        "members": 1,
        "claimants": 1,
        "cost_share_cents": 1250,
        "deductible_cents": 1000,
        "coinsurance_cents": 250,
        "copay_cents": 0,
        "pharmacy_member_paid_cents": 0,
    }
    assert cells[("2026-02",)]["cost_share_cents"] == 2000
    assert cells[("2026-02",)]["copay_cents"] == 2000
    assert cells[("2026-03",)] == {
        "member_months": 2,
        "members": 2,
        "claimants": 1,
        "cost_share_cents": 310,
        "deductible_cents": 0,
        "coinsurance_cents": 0,
        "copay_cents": 0,
        "pharmacy_member_paid_cents": 310,
    }


def _distribution_data() -> Data:
    return (
        Data()
        .member("zero")
        .member("neg")
        .medical("neg", "2026-02-01", claim_status="reversed", allowed_amount="-50.00")
        .member("small")
        .medical("small", "2026-03-01", allowed_amount="0.50")
        .member("edge")
        .fill("edge", "2026-03-01", allowed_amount="1.26")  # exactly the first edge
        .member("big")
        .medical("big", "2026-05-01", allowed_amount="149000.00")
        .fill("big", "2026-05-02", allowed_amount="1000.00")
        .member("part", "2026-01-01", "2026-06-30")
        .medical("part", "2026-02-01", allowed_amount="10.00")
        .medical("part", "2026-08-01", allowed_amount="100.00")  # not enrolled then
        .member("switch", "2025-01-01", "2026-06-30", plan_code="P1")
        .member("switch", "2026-07-01", None, plan_code="P2", birth_date="1960-06-15")
        .medical("switch", "2026-03-01", allowed_amount="300.00")
        .medical("switch", "2026-09-01", allowed_amount="200.00")
    )


def test_distribution_histogram_bins_and_cents_per_member() -> None:
    cells = run(_distribution_data(), "cost.distribution", YEAR, group_by=[D.PLAN_CODE])
    p1, p2 = cells[("P1",)], cells[("P2",)]
    assert p1["members"] == 6
    assert p1["allowed_cents"] == -5000 + 50 + 126 + 15_000_000 + 1000
    histogram = p1["allowed_histogram"]
    assert isinstance(histogram, Histogram)
    assert len(histogram.counts) == len(histogram.sums_cents) == N_BINS
    assert EDGES_CENTS[0] == 126
    expected = {
        0: (2, -5000),
        1: (1, 50),
        2: (1, 126),
        bin_index(1000): (1, 1000),
        bin_index(15_000_000): (1, 15_000_000),
    }
    for index in range(N_BINS):
        assert (histogram.counts[index], histogram.sums_cents[index]) == expected.get(
            index, (0, 0)
        ), index
    # The switcher is attributed to their latest month (plan P2) with the whole period's total.
    assert p2["members"] == 1 and p2["allowed_cents"] == 50_000
    assert p2["allowed_histogram"].counts[bin_index(50_000)] == 1
    # A filter selects the attributed cell (not the months of the plan).
    assert (
        run(_distribution_data(), "cost.distribution", YEAR, filters={D.PLAN_CODE: ("P2",)})[()][
            "allowed_cents"
        ]
        == 50_000
    )
    # Age band from the latest month's span: born 1960-06-15, aged 66 on 2026-12-01.
    by_age = run(_distribution_data(), "cost.distribution", YEAR, group_by=[D.AGE_BAND])
    assert by_age[("65+",)]["members"] == 1


def test_histogram_cells_pass_disclosure_whole_or_not_at_all() -> None:
    data = Data()
    for i in range(12):
        data.member(f"m{i}").medical(f"m{i}", "2026-01-05", allowed_amount=f"{10 * (i + 1)}.00")
    query = QuerySpec("cost.distribution", 1)
    raw = Engine(MemorySource(data.rows), CARRIER).evaluate(Q1, query)
    (cell,) = raw.cells
    assert isinstance(cell, RawCell) and cell.value("members") == 12
    assert cell.histogram("allowed_histogram").total_count == 12
    with pytest.raises(TypeError):
        cell.value("allowed_histogram")
    exact = Policy(perturbation={"enabled": False})
    released = protect_table(raw, exact, Q1)
    assert released.cells[0].status is Status.RELEASED
    histogram = cell.histogram("allowed_histogram")
    released_histogram = released.cells[0].stat("allowed_histogram").value
    # Every member in a bin of their own: every bin is below the floor and withheld.
    assert isinstance(released_histogram, Histogram)
    assert released_histogram.withheld_bins == tuple(i for i, c in enumerate(histogram.counts) if c)
    assert sum(released_histogram.counts) == 0
    suppressed = protect_table(raw, Policy(min_cell_size=20), Q1)
    assert all(s.value is None for s in suppressed.cells[0].stats)


def test_high_cost_claimant_thresholds_are_inclusive() -> None:
    data = Data().member("none")
    for member, dollars in (
        ("a", "49999.99"),
        ("b", "50000.00"),
        ("c", "100000.00"),
        ("d", "1000000.00"),
    ):
        data.member(member).medical(member, "2026-06-01", allowed_amount=dollars)
    assert one(run(data, "cost.high_cost_claimants", YEAR)) == {
        "members": 5,
        "allowed_cents": 119_999_999,
        "hcc_50k": 3,
        "hcc_50k_allowed_cents": 115_000_000,
        "hcc_100k": 2,
        "hcc_100k_allowed_cents": 110_000_000,
        "hcc_250k": 1,
        "hcc_250k_allowed_cents": 100_000_000,
        "hcc_1m": 1,
        "hcc_1m_allowed_cents": 100_000_000,
    }


def test_out_of_network_share_sums_known_flags_only() -> None:
    data = (
        Data()
        .member("a")
        .member("b", sex="M")
        .medical("a", "2026-01-05", allowed_amount="100.00", in_network=True)
        .medical("a", "2026-01-06", allowed_amount="40.00", in_network=False)
        .medical(
            "a", "2026-01-07", claim_status="reversed", allowed_amount="-10.00", in_network=False
        )
        .medical("a", "2026-01-08", allowed_amount="60.00", in_network=None)
        .medical("b", "2026-01-08", allowed_amount="70.00", in_network=None)
    )
    cells = run(data, "cost.out_of_network_share", group_by=[D.SEX])
    assert cells == {
        ("F",): {
            "claimants": 1,
            "out_of_network_allowed_cents": 3000,
            "known_network_allowed_cents": 13000,
        },
        # Claimants are members with a medical row counted, whatever its network flag.
        ("M",): {
            "claimants": 1,
            "out_of_network_allowed_cents": 0,
            "known_network_allowed_cents": 0,
        },
    }


# --- utilization and readmissions -----------------------------------------------------------


def _versions(
    data: Data, member: str, start: str, end: str, statuses: list[str], facility: str = "F1"
) -> None:
    claim = f"v{member}{start}"
    for version, status in enumerate(statuses, start=1):
        data.stay_line(
            member, start, end, facility, claim_id=claim, claim_status=status, claim_version=version
        )


def test_inpatient_stays_merge_adjacent_lines_and_use_final_action() -> None:
    data = (
        Data()
        .member("a")
        .member("b", "2026-01-01", "2026-01-31")
        .member("b", "2026-03-01")
        .stay_line("a", "2026-01-03", "2026-01-05")
        .stay_line("a", "2026-01-06", "2026-01-09")  # adjacent: one stay Jan 3–9, 6 days
        .stay_line("a", "2026-01-04", "2026-01-06", "F2")  # another facility: a stay, 2 days
        .stay_line("a", "2026-02-10", "2026-02-10")  # same day: 1 day
        .stay_line(
            "a",
            "2026-02-20",
            "2026-02-25",
            admission_date="2026-02-18",
            discharge_date="2026-02-26",
        )  # Feb 18–26: 8 days
        .stay_line("a", "2026-03-01", "2026-03-02", bill_type="131")  # not inpatient
        .stay_line("a", "2026-03-05", "2026-03-07", claim_status="denied")
        .stay_line("a", "2026-03-08", "2026-03-09", claim_type="professional")
        .stay_line("a", "2025-12-28", "2026-01-02", "F3")
        .stay_line("a", "2026-01-03", "2026-01-05", "F3")  # merges into a December stay
        .stay_line("b", "2026-02-05", "2026-02-08")  # b is not enrolled in February
    )
    _versions(data, "a", "2026-03-10", "2026-03-12", ["paid", "reversed"])
    _versions(data, "a", "2026-03-20", "2026-03-22", ["paid", "reversed", "adjusted"])
    cells = run(data, "util.inpatient", group_by=[D.MONTH])
    assert cells == {
        ("2026-01",): {"member_months": 2, "members": 2, "stay_members": 1, "stays": 2, "days": 8},
        ("2026-02",): {"member_months": 1, "members": 1, "stay_members": 1, "stays": 2, "days": 9},
        ("2026-03",): {"member_months": 2, "members": 2, "stay_members": 1, "stays": 1, "days": 2},
    }


def test_repeated_identical_lines_make_one_stay() -> None:
    # Lines of one claim often share their dates; they must not carry a stay into the next.
    data = Data()
    for member in ("a", "b", "c"):
        data.member(member)
        for month in ("01", "02", "03"):
            for line in range(1, 9):
                data.stay_line(
                    member,
                    f"2026-{month}-10",
                    f"2026-{month}-14",
                    claim_id=f"{member}{month}",
                    claim_line=line,
                )
    cells = run(data, "util.inpatient", group_by=[D.MONTH])
    assert {k: (v["stays"], v["days"]) for k, v in cells.items()} == {
        ("2026-01",): (3, 12),
        ("2026-02",): (3, 12),
        ("2026-03",): (3, 12),
    }


def test_readmissions_transfers_and_month_boundaries() -> None:
    data = (
        Data()
        .member("a")
        .member("b")
        .member("d")
        .member("e")
        .member("c", "2026-01-01", "2026-01-31")
        .stay_line("a", "2026-01-05", "2026-01-10")  # readmitted (Jan 20: 10 days)
        .stay_line("a", "2026-01-10", "2026-01-15", "F2")  # a transfer, readmitted (5 days)
        .stay_line("a", "2026-01-20", "2026-01-22")  # readmitted Feb 21: 30 days later
        .stay_line("a", "2026-02-21", "2026-02-25", "F3")  # readmitted Mar 25 (28 days)
        .stay_line("a", "2026-03-25", "2026-03-28")  # readmitted after the period (30 days)
        .stay_line("a", "2026-04-27", "2026-04-29")
        .stay_line("b", "2026-03-01", "2026-03-05")
        .stay_line("b", "2026-04-05", "2026-04-06")  # 31 days: not a readmission
        .stay_line("d", "2026-01-05", "2026-01-10")
        .stay_line("d", "2026-01-10", "2026-01-14", "F2")  # transfer only: no readmission
        .stay_line("e", "2026-01-01", "2026-01-05")
        .stay_line("e", "2026-01-06", "2026-01-08")  # adjacent, same facility: one stay
        .stay_line("c", "2026-02-01", "2026-02-03")  # ends in a month c is not enrolled
        .stay_line("c", "2026-02-10", "2026-02-12")
    )
    cells = run(data, "outcome.readmission_30d", group_by=[D.MONTH])
    assert cells == {
        ("2026-01",): {"stay_members": 3, "index_stays": 6, "readmissions": 3},
        ("2026-02",): {"stay_members": 1, "index_stays": 1, "readmissions": 1},
        ("2026-03",): {"stay_members": 2, "index_stays": 2, "readmissions": 1},
    }


def test_ed_visits_once_per_member_day_final_action() -> None:
    data = (
        Data()
        .member("a")
        .member("b", "2026-01-01", "2026-02-28")
        .medical("a", "2026-01-05", place_of_service="23")
        .medical(
            "a",
            "2026-01-05",
            claim_type="institutional",
            bill_type="131",
            place_of_service=None,
            revenue_code="0450",
        )  # same member-day
        .medical("a", "2026-01-06", hcpcs="99285")
        .medical("a", "2026-01-07", revenue_code="0981", claim_status="denied")
        .medical("a", "2026-01-08", revenue_code="0453")  # not an ED code
        .medical("a", "2026-02-01", claim_id="x", revenue_code="0981", claim_version=1)
        .medical(
            "a",
            "2026-02-01",
            claim_id="x",
            revenue_code="0981",
            claim_version=2,
            claim_status="reversed",
        )
        .medical("a", "2026-02-02", revenue_code="0459")
        .medical("b", "2026-01-09", place_of_service="23")
        .medical("b", "2026-03-03", place_of_service="23")  # b is not enrolled in March
    )
    cells = run(data, "util.ed_visits", group_by=[D.MONTH])
    assert cells == {
        ("2026-01",): {"member_months": 2, "members": 2, "visit_members": 2, "visits": 3},
        ("2026-02",): {"member_months": 2, "members": 2, "visit_members": 1, "visits": 1},
        ("2026-03",): {"member_months": 1, "members": 1, "visit_members": 0, "visits": 0},
    }


def test_office_and_telehealth_visits() -> None:
    data = (
        Data()
        .member("a")
        .medical("a", "2026-01-05", hcpcs="99213")
        .medical("a", "2026-01-05", hcpcs="99215")  # same day: one office visit
        .medical("a", "2026-01-05", hcpcs="99213", place_of_service="02")  # and a telehealth
        .medical("a", "2026-01-06", hcpcs="99214", place_of_service="10")
        .medical("a", "2026-01-07", hcpcs="99201")  # outside 99202–99215
        .medical("a", "2026-01-08", hcpcs="99213", place_of_service="22")
        .medical("a", "2026-01-09", claim_id="y", hcpcs="99211", claim_version=1)
        .medical(
            "a", "2026-01-09", claim_id="y", hcpcs="99211", claim_version=2, claim_status="reversed"
        )
        .medical("a", "2026-02-01", hcpcs="99212")
    )
    cells = run(data, "util.office_visits", group_by=[D.MONTH])
    assert cells[("2026-01",)] == {
        "member_months": 1,
        "members": 1,
        "visit_members": 1,
        "office_visits": 1,
        "telehealth_visits": 2,
    }
    assert cells[("2026-02",)]["office_visits"] == 1
    assert cells[("2026-03",)]["visit_members"] == 0


def test_scripts_count_final_action_fills_once() -> None:
    data = (
        Data()
        .member("a")
        .member("b", "2026-02-01")
        .fill("a", "2026-01-05", days_supply=30)
        .fill("a", "2026-01-10", claim_id="adj", days_supply=90)
        .fill("a", "2026-01-10", claim_id="adj", claim_status="adjusted", days_supply=90)
        .fill("a", "2026-01-15", claim_id="rev")
        .fill("a", "2026-01-15", claim_id="rev", claim_status="reversed")
        .fill("a", "2026-01-20", claim_status="denied")
        .fill("a", "2026-02-01", days_supply=60)
        .fill("b", "2026-01-07")  # b is not enrolled in January
    )
    cells = run(data, "util.scripts", group_by=[D.MONTH])
    assert cells[("2026-01",)] == {
        "member_months": 1,
        "members": 1,
        "fill_members": 1,
        "fills": 2,
        "days_supply": 120,
    }
    assert cells[("2026-02",)] == {
        "member_months": 2,
        "members": 2,
        "fill_members": 1,
        "fills": 1,
        "days_supply": 60,
    }


# --- pharmacy -------------------------------------------------------------------------------


def test_generic_dispensing_by_drug_class_and_month() -> None:
    data = (
        Data()
        .member("a")
        .fill("a", "2026-01-05", drug_class="statin", generic=True)
        .fill("a", "2026-01-06", drug_class="statin", generic=False)
        .fill("a", "2026-01-07", drug_class=None, generic=True)
        .fill("a", "2026-01-08", drug_class="Bad Class!", generic=True)  # not of the form
        .fill("a", "2026-01-09", claim_id="rv", drug_class="statin")
        .fill("a", "2026-01-09", claim_id="rv", drug_class="statin", claim_status="reversed")
        .fill("a", "2026-02-01", drug_class="ssri", generic=True)
    )
    cells = run(data, "rx.generic_dispensing_rate", group_by=[D.DRUG_CLASS, D.MONTH])
    assert cells == {
        ("ssri", "2026-02"): {"fill_members": 1, "fills": 1, "generic_fills": 1},
        ("statin", "2026-01"): {"fill_members": 1, "fills": 2, "generic_fills": 1},
        ("unknown", "2026-01"): {"fill_members": 1, "fills": 2, "generic_fills": 2},
    }
    filtered = run(
        data,
        "rx.generic_dispensing_rate",
        group_by=[D.MONTH],
        filters={D.DRUG_CLASS: ("statin", "ssri")},
    )
    assert filtered == {
        ("2026-01",): {"fill_members": 1, "fills": 2, "generic_fills": 1},
        ("2026-02",): {"fill_members": 1, "fills": 1, "generic_fills": 1},
    }


def _specialty_data() -> Data:
    return (
        Data()
        .member("a")
        .member("b")
        .fill("a", "2026-01-05", allowed_amount="5000.00", specialty=True)
        .fill("a", "2026-01-06", allowed_amount="3000.00", days_supply=30)  # 3000 per 30 days
        .fill("a", "2026-01-07", allowed_amount="900.00", days_supply=10)  # 2700 per 30 days
        .fill("a", "2026-01-08", allowed_amount="2400.00", days_supply=30)
        .fill("a", "2026-01-09", claim_id="net0", allowed_amount="3000.00", days_supply=30)
        .fill(
            "a",
            "2026-01-09",
            claim_id="net0",
            allowed_amount="-3000.00",
            days_supply=30,
            claim_status="reversed",
        )  # net allowed 0
        .fill("a", "2026-01-10", allowed_amount="100.00", days_supply=0)
        .fill("b", "2026-01-10", allowed_amount="50.00")
    )


@pytest.mark.parametrize(
    ("dollars", "specialty_cents"),
    [(0.0, 500_000), (2500.0, 890_000), (2700.0, 890_000), (2700.01, 800_000)],
)
def test_specialty_share_flag_or_cost_per_30_days(dollars: float, specialty_cents: int) -> None:
    cells = run(_specialty_data(), "rx.specialty_share", parameters={"cost_per_30_days": dollars})
    assert one(cells) == {
        "fill_members": 2,
        "specialty_members": 1,
        "pharmacy_allowed_cents": 1_145_000,
        "specialty_allowed_cents": specialty_cents,
    }


def test_spend_by_class_nets_dollars_and_counts_final_fills() -> None:
    data = (
        Data()
        .member("a")
        .member("b")
        .fill("a", "2026-01-05", allowed_amount="10.00", paid_amount="8.00")
        .fill("a", "2026-01-06", claim_id="rv", allowed_amount="20.00", paid_amount="16.00")
        .fill(
            "a",
            "2026-01-06",
            claim_id="rv",
            allowed_amount="-20.00",
            paid_amount="-16.00",
            claim_status="reversed",
        )
        .fill("a", "2026-01-07", drug_class=None, allowed_amount="5.00", paid_amount="4.00")
        .fill("b", "2026-02-07", allowed_amount="7.00", paid_amount="6.00")
    )
    cells = run(data, "rx.spend_by_class", group_by=[D.DRUG_CLASS])
    assert cells == {
        ("statin",): {"fill_members": 2, "allowed_cents": 1700, "paid_cents": 1400, "fills": 2},
        ("unknown",): {"fill_members": 1, "allowed_cents": 500, "paid_cents": 400, "fills": 1},
    }


def _rebate_data() -> Data:
    return (
        Data()
        .member("a")
        .fill("a", "2026-01-10", allowed_amount="40.00")  # month outside the period
        .fill("a", "2026-02-10", allowed_amount="10.00")
        .fill("a", "2026-03-10", drug_class=None, allowed_amount="5.00")
        .fill("a", "2026-04-10", allowed_amount="20.00")
        .fill("a", "2026-05-10", allowed_amount="99.00")
    )


def test_rebate_share_by_quarter_and_class() -> None:
    period = Period.parse("2026-02:2026-04")  # touches 2026Q1 and 2026Q2
    data = (
        _rebate_data()
        .rebate("2026Q1", "100.00", "statin")
        .rebate("2026-q2", "50.00", "statin")
        .rebate("2026Q2", "30.00")
        .rebate("2026Q3", "999.00", "statin")
        .rebate("2025Q4", "999.00", "statin")
    )
    cells = run(data, "rx.rebate_share", period, group_by=[D.QUARTER, D.DRUG_CLASS])
    assert cells == {
        ("2026Q1", "statin"): {
            "fill_members": 1,
            "pharmacy_allowed_cents": 1000,
            "rebate_cents": 10000,
        },
        ("2026Q1", "unknown"): {
            "fill_members": 1,
            "pharmacy_allowed_cents": 500,
            "rebate_cents": 0,
        },
        ("2026Q2", "statin"): {
            "fill_members": 1,
            "pharmacy_allowed_cents": 2000,
            "rebate_cents": 5000,
        },
        # Rebates of a class nobody filled are a cell of their own: in the program sum.
        ("2026Q2", "unknown"): {
            "fill_members": 0,
            "pharmacy_allowed_cents": 0,
            "rebate_cents": 3000,
        },
    }
    assert run(data, "rx.rebate_share", period, group_by=[D.CARRIER, D.YEAR]) == {
        (CARRIER, "2026"): {
            "fill_members": 1,
            "pharmacy_allowed_cents": 3500,
            "rebate_cents": 18000,
        },
    }
    # Without a rebates table, there are no rebates.
    assert one(run(_rebate_data(), "rx.rebate_share", period)) == {
        "fill_members": 1,
        "pharmacy_allowed_cents": 3500,
        "rebate_cents": 0,
    }


# --- quality measures -----------------------------------------------------------------------


def test_breast_cancer_screening_look_back_and_eligibility() -> None:
    born = "1970-03-01"
    data = (
        Data()
        .member("w1", birth_date=born)
        .medical("w1", "2024-10-01", hcpcs="77067")  # first day of the 27 months
        .member("w2", birth_date=born)
        .medical("w2", "2024-09-30", hcpcs="77067")  # one day too early
        .member("w3", birth_date="1951-12-31")  # 75 on the period's last day
        .medical("w3", "2026-05-01", hcpcs="77067")
        .member("w4", birth_date="1976-12-31")  # 50 on the period's last day
        .member("w5", "2020-01-01", "2026-05-31", birth_date=born)
        .member("w5", "2026-07-01", None, birth_date=born)  # not enrolled in June
        .medical("w5", "2026-08-01", hcpcs="77067")
        .member("m1", birth_date=born, sex="M")
        .medical("m1", "2026-08-01", hcpcs="77067")
        .member("w6", birth_date=born)
        .medical("w6", "2026-08-01", hcpcs="77064")
        .medical("w6", "2026-08-02", hcpcs="77061", claim_status="denied")
        .member("w7", birth_date=born, state="MD")
        .medical("w7", "2026-11-02", claim_id="z", hcpcs="77062", claim_version=1)
        .medical(
            "w7",
            "2026-11-02",
            claim_id="z",
            hcpcs="77062",
            claim_version=2,
            claim_status="adjusted",
        )
    )
    assert one(run(data, "quality.breast_cancer_screening", YEAR)) == {
        "eligible": 5,
        "screened": 2,
    }
    by_state = run(data, "quality.breast_cancer_screening", YEAR, group_by=[D.STATE, D.YEAR])
    assert by_state == {
        ("MD", "2026"): {"eligible": 1, "screened": 1},
        ("VA", "2026"): {"eligible": 4, "screened": 1},
    }


def test_diabetes_two_outpatient_dates_or_one_inpatient_line() -> None:
    data = Data()
    adult = "1986-01-01"
    (
        data.member("d1", birth_date=adult)
        .medical("d1", "2026-01-05", dx1="E119")
        .medical("d1", "2026-03-03", dx2="E11")
        .medical("d1", "2026-06-01", hcpcs="83036")
        .member("d2", birth_date=adult)
        .medical("d2", "2026-01-05", dx1="E109")
        .medical("d2", "2026-01-05", dx1="E101")  # the same date
        .member("d3", birth_date=adult)
        .stay_line("d3", "2026-02-01", "2026-02-03", dx7="E1165")
        .medical("d3", "2025-12-01", hcpcs="83036")  # before the period
        .member("d4", birth_date="2009-06-01")  # 17
        .stay_line("d4", "2026-02-01", "2026-02-03", dx1="E119")
        .member("d5", birth_date=adult)
        .medical("d5", "2026-01-05", dx1="E119")
        .medical("d5", "2026-02-05", dx1="E119", claim_status="denied")
        .member("d6", birth_date=adult)
        .medical("d6", "2025-12-20", dx1="E119")
        .medical("d6", "2026-01-05", dx1="E119")
        .member("d7", birth_date="1951-06-01")  # 75
        .stay_line("d7", "2026-04-01", "2026-04-02", dx1="E100")
        .medical("d7", "2026-05-01", hcpcs="83037")
        .member("d8", birth_date=adult)
        .medical(
            "d8",
            "2026-01-05",
            dx3="E112",
            claim_type="institutional",
            bill_type="131",
            place_of_service=None,
        )
        .medical("d8", "2026-02-05", dx10="E119")
        .member("d9", birth_date=adult)
        .medical("d9", "2026-01-05", dx1="I10", dx2="E78")
        .medical("d9", "2026-02-05", dx1="E13")
    )
    assert one(run(data, "quality.diabetes_hba1c_testing", YEAR)) == {
        "eligible": 4,
        "tested": 2,
    }


def test_the_lines_latest_versions_are_inlined_wherever_they_stay_a_cte() -> None:
    """The block of each line's later versions, read twice by HbA1c testing, must not be
    materialised as a CTE (DuckDB 2.0.1 returned wrong rows when it was, and empty): alone,
    and in a batch where no other query reads it, HbA1c testing gives the same cells; in a batch
    where several queries read it, it is one table."""
    data = Data()
    adult = "1986-01-01"
    (
        data.member("d1", birth_date=adult)
        .medical("d1", "2026-01-05", dx1="E119")
        .medical("d1", "2026-03-03", dx2="E11")
        .medical("d1", "2026-06-01", hcpcs="83036")
        .member("d3", birth_date=adult)
        .stay_line("d3", "2026-02-01", "2026-02-03", dx7="E1165")
        .member("d7", birth_date="1951-06-01")
        .stay_line("d7", "2026-04-01", "2026-04-02", dx1="E100")
        .medical("d7", "2026-05-01", hcpcs="83037")
    )  # no line has a later version: the block is empty
    testing = QuerySpec("quality.diabetes_hba1c_testing", 1)
    enrollment = QuerySpec("enrollment.member_months", 1)
    screening = QuerySpec("quality.breast_cancer_screening", 1)
    engine = Engine(MemorySource(data.rows), CARRIER)
    assert "NOT MATERIALIZED" in engine.render(YEAR, testing)
    alone = engine.evaluate(YEAR, testing)
    [_, in_batch] = engine.evaluate_many(YEAR, [enrollment, testing])
    expected = {"eligible": 3, "tested": 2}
    for table in (alone, in_batch):
        assert [dict(cell.values) for cell in table.cells] == [expected]
    rendered = engine.render_batch(YEAR, (enrollment, testing))
    assert "NOT MATERIALIZED" in rendered.queries[1]
    rendered = engine.render_batch(YEAR, (testing, screening))
    assert any("claim_version > 1" in statement for _, statement, _, _ in rendered.shared)
    assert not any("claim_version > 1" in text for text in rendered.queries)


def test_statin_use_among_members_with_antidiabetic_fills() -> None:
    data = Data()
    for member, birth in (
        ("s1", "1976-01-01"),
        ("s2", "1976-01-01"),
        ("s3", "1987-01-01"),
        ("s4", "1966-01-01"),
        ("s5", "1966-01-01"),
    ):
        data.member(member, birth_date=birth)
    (
        data.fill("s1", "2026-02-01", drug_class="antidiabetic")
        .fill("s1", "2026-03-01", drug_class="antidiabetic")
        .fill("s1", "2026-09-01", drug_class="statin")
        .fill("s2", "2026-02-01", drug_class="antidiabetic")
        .fill("s2", "2026-03-01", claim_id="gone", drug_class="antidiabetic")
        .fill(
            "s2", "2026-03-01", claim_id="gone", drug_class="antidiabetic", claim_status="reversed"
        )
        .fill("s2", "2026-04-01", drug_class="statin")
        .fill("s3", "2026-02-01", drug_class="antidiabetic")  # 39 on the period's last day
        .fill("s3", "2026-03-01", drug_class="antidiabetic")
        .fill("s4", "2026-02-01", drug_class="antidiabetic")
        .fill("s4", "2026-03-01", drug_class="antidiabetic")
        .fill("s4", "2026-04-01", drug_class="statin", claim_status="denied")
        .fill("s5", "2025-12-01", drug_class="antidiabetic")
        .fill("s5", "2026-03-01", drug_class="antidiabetic")
        .fill("s5", "2026-04-01", drug_class="statin")
    )
    assert one(run(data, "quality.statin_use_diabetes", YEAR)) == {
        "eligible": 2,
        "on_statin": 1,
    }


# --- operations -----------------------------------------------------------------------------


def test_claims_lag_buckets_by_incurred_month() -> None:
    data = (
        Data()
        .member("a")
        .medical("a", "2026-01-10", paid_amount="100.00", paid_date="2026-01-31")
        .medical("a", "2026-01-15", paid_amount="50.00", paid_date="2026-02-01")
        .medical("a", "2026-02-03", paid_amount="30.00", paid_date="2027-04-01")  # 14: 12+
        .medical("a", "2026-02-04", paid_amount="20.00", paid_date="2027-02-28")  # 12
        .medical("a", "2026-02-05", paid_amount="1.00", paid_date="2027-01-31")  # 11
        .medical("a", "2026-03-01", paid_amount="10.00", paid_date=None)
        .medical(
            "a", "2026-03-02", paid_amount="-50.00", paid_date="2026-03-20", claim_status="reversed"
        )
        .medical("a", "2026-03-03", paid_amount="5.00", paid_date="2026-02-25")  # no bucket
    )
    cells = run(data, "ops.claims_lag", group_by=[D.MONTH])

    def lags(month: str) -> dict[int, int]:
        return {k: v for k in range(13) if (v := cells[(month,)][f"paid_lag_{k:02d}_cents"])}

    assert lags("2026-01") == {0: 10000, 1: 5000}
    assert lags("2026-02") == {11: 100, 12: 5000}
    assert lags("2026-03") == {0: -5000}
    assert all(cells[(m,)]["claimants"] == 1 for m in ("2026-01", "2026-02", "2026-03"))


def test_member_month_spend_of_one_month_is_that_month_of_a_longer_period() -> None:
    """Over a one-month period the spend block takes each row's month as the period's (a
    constant, see sql.month_start_of); the metrics reading it give the cells the oracle gives,
    and the cells of that month over two months, for claims and fills on the months' first
    and last days."""
    data = (
        Data()
        .member("a")
        .member("b", start="2026-02-01")
        .medical("a", "2026-01-01", allowed_amount="10.00", paid_amount="8.00", copay_amount="2")
        .medical("a", "2026-01-31", allowed_amount="5.00", paid_amount="4.00", in_network=False)
        .medical(
            "a", "2026-02-01", allowed_amount="7.00", paid_amount="6.00", paid_date="2026-04-02"
        )
        .medical(
            "b", "2026-02-28", allowed_amount="3.00", paid_amount="3.00", place_of_service="00"
        )
        .medical("a", "2026-02-10", claim_status="denied", charge_amount="9.00")
        .fill("a", "2026-01-31", allowed_amount="20.00", paid_amount="15.00")
        .fill("b", "2026-02-01", allowed_amount="4.00", paid_amount="4.00", member_paid_amount="1")
    )
    metrics = [
        "cost.pmpm",
        "cost.member_cost_share_pmpm",
        "cost.out_of_network_share",
        "ops.claims_lag",
        "ops.data_quality",
        "ops.denial_rate",
    ]
    both = Period.parse("2026-01:2026-02")

    def oracle_cells(metric: str, period: Period) -> Cells:
        cells = _oracle_cells(data, metric, period, [D.MONTH])
        if metric == "ops.data_quality":  # the control-total comparison needs declared totals
            cells = {
                k: {s: v for s, v in c.items() if "declared" not in s and "in_data" not in s}
                for k, c in cells.items()
            }
        return cells

    for metric in metrics:
        over_both = run(data, metric, both, [D.MONTH])
        assert over_both == oracle_cells(metric, both), metric
        for month in ("2026-01", "2026-02"):
            alone = run(data, metric, Period.parse(month), [D.MONTH])
            assert alone == oracle_cells(metric, Period.parse(month)), (metric, month)
            assert alone == {k: v for k, v in over_both.items() if k == (month,)}, (metric, month)
    # The month is the period's, not each row's, only where the period is one month.
    one_month = member_month_spend_sql(Period.parse("2026-02"))
    assert (
        "DATE_TRUNC" not in one_month and "CAST('2026-02-01' AS DATE) AS month_start" in one_month
    )
    assert one_month.count("DATE_TRUNC") == 0
    assert member_month_spend_sql(both).count("DATE_TRUNC('MONTH'") == 3


def member_month_spend_sql(period: Period) -> str:
    from carrier_node.query.aggregate import _member_month_spend

    return _member_month_spend(period).sql(dialect="duckdb")


def test_denial_rate_uses_the_latest_version_of_each_line() -> None:
    data = (
        Data()
        .member("a")
        .member("b", "2026-02-01")
        .medical("a", "2026-01-05", charge_amount="100.00")
        .medical("a", "2026-01-06", charge_amount="40.00", claim_status="denied")
    )
    for claim, statuses, charges in (
        ("rev", ["paid", "reversed"], ["70.00", "-70.00"]),
        ("adj", ["paid", "reversed", "adjusted"], ["30.00", "-30.00", "35.00"]),
        ("re", ["denied", "paid"], ["20.00", "20.00"]),
    ):
        for version, (status, charge) in enumerate(zip(statuses, charges, strict=True), 1):
            data.medical(
                "a",
                "2026-01-07",
                claim_id=claim,
                claim_version=version,
                claim_status=status,
                charge_amount=charge,
            )
    data.medical("a", "2026-04-01", claim_status="denied", charge_amount="9.00")
    data.medical("b", "2026-01-07", claim_status="denied", charge_amount="9.00")
    assert one(run(data, "ops.denial_rate")) == {
        "claimants": 1,
        "lines": 4,
        "denied_lines": 1,
        "charge_cents": 19500,
        "denied_charge_cents": 4000,
    }


def _oracle_cells(data: Data, metric: str, period: Period, group_by: list[D]) -> Cells:
    """The pandas oracle's cells (this carrier's scope) over the same rows."""
    frames = {name: pd.DataFrame(rows) for name, rows in data.rows.items()}
    out = oracle.compute(metric, {CARRIER: frames}, period, group_by)
    dims = [d.value for d in group_by]
    statistics = [s.name for s in get_metric(metric).statistics]
    return {
        tuple(str(row[d]) for d in dims): {name: row[name] for name in statistics}
        for row in out[out["scope"] == CARRIER].to_dict("records")
    }


def _engine_as_oracle(
    data: Data, period: Period, cases: list[tuple[str, list[D]]]
) -> dict[str, Cells]:
    """The engine's cells of each (metric, group-by) of ``cases``, each checked equal to the
    oracle's over the same rows."""
    engine = {metric: run(data, metric, period, group_by) for metric, group_by in cases}
    for metric, group_by in cases:
        assert engine[metric] == _oracle_cells(data, metric, period, group_by), metric
    return engine


def test_tied_versions_and_fills_of_several_rows_as_the_catalogue_defines() -> None:
    """Rows of a line tied on its greatest version are all final (no row order decides, so a
    warehouse answers alike); a version below 1 counts as 1; a fill of several rows takes the
    least member and fill date, the greatest drug class and days supply, generic when a row
    is. The engine and the oracle agree on each, and on the figures worked out here."""
    january = Period.parse("2026-01")
    data = Data().member("a").member("b")
    for version, status in ((1, "paid"), (2, "denied"), (2, "denied")):
        data.medical(
            "a",
            "2026-01-05",
            claim_id="t",
            claim_version=version,
            claim_status=status,
            charge_amount="10.00",
        )
    for version in (0, 1):  # both count as version 1: tied, both final
        data.medical("a", "2026-01-06", claim_id="u", claim_version=version, charge_amount="10.00")
    data.fill("a", "2026-01-20", claim_id="f1", drug_class="statin", days_supply=30, generic=False)
    data.fill("a", "2026-01-10", claim_id="f1", drug_class="antidiabetic", days_supply=90)
    # Rows of two members: the least member id, the earliest date (January, not February).
    data.fill("b", "2026-02-01", claim_id="f2", drug_class=None, days_supply=None, generic=False)
    data.fill("a", "2026-01-31", claim_id="f2", drug_class="statin", days_supply=10, generic=False)
    cases = [
        ("ops.denial_rate", []),
        ("util.scripts", []),
        ("rx.generic_dispensing_rate", [D.DRUG_CLASS]),
        ("rx.spend_by_class", [D.DRUG_CLASS]),
        ("util.ed_visits", []),
    ]
    engine = _engine_as_oracle(data, january, cases)
    denial = one(engine["ops.denial_rate"])
    assert (denial["lines"], denial["denied_lines"], denial["charge_cents"]) == (4, 2, 4000)
    assert one(engine["util.scripts"])["days_supply"] == 100  # f1: 90, f2: 10
    assert engine["rx.generic_dispensing_rate"] == {
        ("statin",): {"fill_members": 1, "fills": 2, "generic_fills": 1}
    }


def test_fills_with_rows_outside_the_period_are_judged_on_all_their_rows() -> None:
    """A fill is grouped when one of its rows is in the period, and then over every row it has:
    a row before the period dates it before (not counted), a reversal after the period voids
    it, a generic row after it makes it generic, a row of another class may give it its
    greatest class. The engine (which groups the period's rows and the fills' other rows apart
    and combines them) and the oracle agree, on the figures worked out here too."""
    january = Period.parse("2026-01")
    data = Data().member("a").member("b").medical("a", "2026-01-05")
    # Dated December by its earliest row: not a January fill.
    data.fill("a", "2025-12-30", claim_id="early", generic=False)
    data.fill("a", "2026-01-02", claim_id="early", claim_status="adjusted")
    # Reversed in February: voided, although every January row was paid.
    data.fill("a", "2026-01-10", claim_id="voided")
    data.fill("a", "2026-02-03", claim_id="voided", claim_status="reversed")
    # Generic only by its February row; the greatest class and days supply of all its rows.
    data.fill("b", "2026-01-20", claim_id="late", generic=False, days_supply=30)
    data.fill("b", "2026-02-02", claim_id="late", generic=True, drug_class="statin", days_supply=90)
    data.fill("b", "2026-01-21", claim_id="late", generic=False, drug_class="antidiabetic")
    # No row in January at all: not grouped, whatever its rows.
    data.fill("b", "2026-02-05", claim_id="february")
    data.fill("a", "2026-01-15", claim_id="plain", generic=False, days_supply=10)
    cases = [
        ("util.scripts", []),
        ("rx.generic_dispensing_rate", [D.DRUG_CLASS]),
        ("rx.spend_by_class", [D.DRUG_CLASS]),
        ("rx.specialty_share", []),
    ]
    engine = _engine_as_oracle(data, january, cases)
    scripts = one(engine["util.scripts"])
    assert (scripts["fills"], scripts["fill_members"], scripts["days_supply"]) == (2, 2, 100)
    assert engine["rx.generic_dispensing_rate"] == {
        ("statin",): {"fill_members": 2, "fills": 2, "generic_fills": 1}
    }


def test_data_quality_counts_rows_outside_enrollment_and_bad_codes() -> None:
    data = (
        Data()
        .member("a", "2025-01-01", "2026-02-28")
        .medical("a", "2026-01-05")
        .medical("a", "2026-01-06", place_of_service="00")
        .medical(
            "a",
            "2026-01-07",
            claim_type="institutional",
            place_of_service=None,
            bill_type=None,
            revenue_code="9999",
            drg="ABC",
        )
        .medical("a", "2026-01-08", place_of_service="")  # empty: missing, not invalid
        .medical("z", "2026-01-09")  # nobody enrolled
        .fill("a", "2026-01-10")
        .fill("z", "2026-01-11")
        .medical("a", "2026-03-05")  # a's enrollment ended
        .fill("a", "2026-03-06")
    )
    cells = run(data, "ops.data_quality", group_by=[D.CARRIER, D.MONTH])
    assert cells == {
        (CARRIER, "2026-01"): {
            "claimants": 2,
            "medical_rows": 5,
            "pharmacy_rows": 2,
            "medical_outside_enrollment": 1,
            "pharmacy_outside_enrollment": 1,
            "invalid_place_of_service": 1,
            "invalid_revenue_code": 1,
            "invalid_drg": 1,
            "missing_fields": 2,
        },
        (CARRIER, "2026-03"): {
            "claimants": 1,
            "medical_rows": 1,
            "pharmacy_rows": 1,
            "medical_outside_enrollment": 1,
            "pharmacy_outside_enrollment": 1,
            "invalid_place_of_service": 0,
            "invalid_revenue_code": 0,
            "invalid_drg": 0,
            "missing_fields": 0,
        },
    }


# --- through the file data source -----------------------------------------------------------


def _write_csv(path: Path, table: str, rows: list[dict[str, Any]]) -> None:
    """Only the columns the rows use (optional columns absent from the file)."""
    names = [
        c.name
        for c in next(t for t in TABLES if t.name == table).columns
        if c.required or any(r.get(c.name) is not None for r in rows)
    ]
    lines = [",".join(names)]
    for row in rows:
        values = [row.get(n) for n in names]
        lines.append(
            ",".join(
                "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                for v in values
            )
        )
    (path / f"{table}.csv").write_text("\n".join(lines) + "\n")


def test_file_source_views_without_optional_columns_or_rebates(tmp_path: Path) -> None:
    data = (
        Data()
        .member("a", "2025-01-01", None, plan_code="010")
        .member("b", "2026-02-01", None, plan_code="010")
        .medical(
            "a",
            "2026-01-05",
            allowed_amount="12.34",
            revenue_code="0450",
            claim_type="institutional",
            bill_type="131",
            place_of_service=None,
        )
        .fill("b", "2026-02-05", allowed_amount="1.01")
    )
    for table, rows in data.rows.items():
        _write_csv(tmp_path, table, rows)
    with FileSource(tmp_path) as source:
        assert "rebates" not in source.tables
        engine = Engine(source, CARRIER)
        rebates = engine.evaluate(Q1, QuerySpec("rx.rebate_share", 1, (D.QUARTER,)))
        assert [dict(c.values) for c in rebates.cells] == [
            {"fill_members": 1, "pharmacy_allowed_cents": 101, "rebate_cents": 0}
        ]
        visits = engine.evaluate(Q1, QuerySpec("util.ed_visits", 1, (D.PLAN_CODE,)))
        assert [(c.key, c.value("visits"), c.value("member_months")) for c in visits.cells] == [
            (((D.PLAN_CODE, "010"),), 1, 5)
        ]
        costs = engine.evaluate(Q1, QuerySpec("cost.member_cost_share_pmpm", 1))
        assert costs.cells[0].value("cost_share_cents") == 0
        assert costs.cells[0].value("claimants") == 2


def test_cents_are_summed_in_64_bits_only_where_the_data_bounds_every_sum(tmp_path: Path) -> None:
    """The spend block sums each member month's cents in 64 bits without overflow checks
    (DuckDB's ``sum_no_overflow``) only when the files' rows times their largest amount stay
    within 2**61: then no sum of the claims' cents can wrap. Past it the block keeps ``SUM``,
    whose 128-bit total is exact or fails its cast, never a wrapped figure.

    240 lines of the largest amount the engine turns into cents (just under 10**14 dollars)
    exceed the bound and keep ``SUM``: their total, 2.4e18 cents, still fits 64 bits and comes
    out exact. A thousand lines' total does not: the engine fails with a clear error, where a
    64-bit sum wraps to a wrong figure."""
    largest = "99999999999999.99"
    cents = 9_999_999_999_999_999
    query = QuerySpec("cost.pmpm", 1, (D.MONTH,))

    def source(lines: int, amount: str) -> FileSource:
        directory = tmp_path / f"{lines}-{amount}"
        directory.mkdir()
        data = Data().member("a")
        for line in range(lines):
            day = f"2026-01-{1 + line % 28:02d}"
            data.medical("a", day, allowed_amount=amount, paid_amount="1.00")
        for table, rows in data.rows.items():
            _write_csv(directory, table, rows)
        return FileSource(directory)

    with source(5, "12.34") as small:
        assert small.money_sums_fit_int64
        engine = Engine(small, CARRIER)
        batch = engine.render_batch(JANUARY, (query, query))
        assert any("SUM_NO_OVERFLOW" in s for _, s, _, _ in batch.shared)
        (cell,) = engine.evaluate(JANUARY, query).cells
        assert cell.value("allowed_cents") == 5 * 1234
    with source(240, largest) as many:
        assert 240 * cents > INT64_SUM_LIMIT and not many.money_sums_fit_int64
        engine = Engine(many, CARRIER)
        batch = engine.render_batch(JANUARY, (query, query))
        assert not any("SUM_NO_OVERFLOW" in s for _, s, _, _ in batch.shared)
        (cell,) = engine.evaluate(JANUARY, query).cells
        assert cell.value("allowed_cents") == 240 * cents
    with source(1000, largest) as too_many:
        assert not too_many.money_sums_fit_int64
        with pytest.raises(DataSourceError):
            Engine(too_many, CARRIER).evaluate(JANUARY, query)
        # What the bound guards against: the same sums in 64 bits wrap silently.
        forced = Engine(too_many, CARRIER).render(JANUARY, query, int64_sums=True)
        with too_many.session() as session:
            wrapped = session.execute_arrow(forced).column("allowed_cents").to_pylist()
        assert wrapped != [1000 * cents]
