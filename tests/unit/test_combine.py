"""Combining carriers' tables into program figures, and the tidy CSV / JSON exports."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coordinator.combine import CombinedCell, ScopedTable, carrier_table, combine, months_in_cell
from coordinator.export import (
    TIDY_COLUMNS_FIXED,
    RoundInfo,
    tidy_rows,
    write_csv,
    write_export,
    write_json,
)
from fedoversight import catalogue
from fedoversight.catalogue import FigureInputs, FigureSpec, MetricSpec, StatisticSpec, StatKind
from fedoversight.dimensions import Dimension
from fedoversight.domain import (
    CellResult,
    DisclosureSummary,
    Missing,
    Perturbation,
    Purpose,
    QueryTable,
    Status,
    StatValue,
    Withheld,
)
from fedoversight.errors import InvalidRequestError
from fedoversight.histogram import N_BINS, Histogram, bin_index
from fedoversight.periods import Period

R = Status.RELEASED
W = Status.WITHHELD
M = Dimension.MONTH
Q1 = Period.parse("2026Q1")


def _cell(key: dict[Dimension, str], **stats: int | Histogram | Status | None) -> CellResult:
    """A cell; a statistic given as a Status is that suppression with no value."""
    values = []
    for name, v in stats.items():
        if isinstance(v, Status):
            values.append(StatValue(name, v, None))
        else:
            values.append(StatValue(name, R, v))
    return CellResult(tuple(key.items()), tuple(values))


def _table(
    metric: str, group_by: tuple[Dimension, ...], *cells: CellResult, version: int = 1
) -> QueryTable:
    return QueryTable(metric, version, group_by, tuple(cells), DisclosureSummary(min_cell_size=11))


def _pmpm(
    month: str, mm: int, allowed: int | Status, paid: int = 0, members: int = 100
) -> CellResult:
    return _cell(
        {M: month},
        member_months=mm,
        members=members,
        claimants=members // 2,
        allowed_cents=allowed,
        paid_cents=paid,
    )


def _only(table: ScopedTable, **key: str) -> CombinedCell:
    want = tuple(sorted((Dimension(k), v) for k, v in key.items()))
    found = [c for c in table.cells if tuple(sorted(c.key)) == want]
    assert len(found) == 1, key
    return found[0]


def _hist(*dollars: float) -> Histogram:
    counts = [0] * N_BINS
    sums = [0] * N_BINS
    for d in dollars:
        cents = round(d * 100)
        counts[bin_index(cents)] += 1
        sums[bin_index(cents)] += cents
    return Histogram(tuple(counts), tuple(sums))


# --- sums -------------------------------------------------------------------------------------


def test_three_carriers_sum_exactly() -> None:
    big = 2**60 + 7  # beyond float precision: any float on the way would lose the 7
    tables = {
        "acme": _table(
            "cost.pmpm", (M,), _pmpm("2026-01", 1_000, big, 5), _pmpm("2026-02", 990, 3)
        ),
        "blue": _table("cost.pmpm", (M,), _pmpm("2026-01", 2_000, 11, 6), _pmpm("2026-02", 10, 4)),
        "cove": _table("cost.pmpm", (M,), _pmpm("2026-01", 3, 1, 1)),
    }
    program = combine(tables, Q1)
    assert program.scope == "program"
    assert (program.metric, program.version, program.group_by) == ("cost.pmpm", 1, (M,))
    assert [c.key for c in program.cells] == [((M, "2026-01"),), ((M, "2026-02"),)]
    jan = _only(program, month="2026-01")
    assert jan.stat("member_months").value == 3_003
    assert jan.stat("allowed_cents").value == big + 12
    assert isinstance(jan.stat("allowed_cents").value, int)
    assert jan.stat("paid_cents").value == 12
    assert jan.stat("members").value == 300
    assert jan.status is R and not jan.incomplete
    assert [s.name for s in jan.stats] == [
        "member_months",
        "members",
        "claimants",
        "allowed_cents",
        "paid_cents",
    ]


def test_key_missing_at_a_carrier_counts_zero_and_is_complete() -> None:
    tables = {
        "acme": _table(
            "cost.pmpm", (M,), _pmpm("2026-01", 1_000, 50_000), _pmpm("2026-02", 1_000, 70_000)
        ),
        "blue": _table("cost.pmpm", (M,), _pmpm("2026-01", 500, 25_000)),
    }
    feb = _only(combine(tables, Q1), month="2026-02")
    assert feb.stat("member_months").value == 1_000
    assert feb.stat("allowed_cents").value == 70_000
    assert not feb.incomplete and feb.status is R
    assert feb.figure("allowed_pmpm").value == pytest.approx(0.70)
    assert feb.figure("allowed_pmpm").complete


def test_allowed_pmpm_from_combined_sums() -> None:
    tables = {
        "acme": _table(
            "cost.pmpm",
            (),
            _cell(
                {},
                member_months=1_000,
                members=100,
                claimants=60,
                allowed_cents=46_700_000,
                paid_cents=40_000_000,
            ),
        ),
        "blue": _table(
            "cost.pmpm",
            (),
            _cell(
                {},
                member_months=3_000,
                members=300,
                claimants=200,
                allowed_cents=140_100_000,
                paid_cents=1,
            ),
        ),
    }
    (cell,) = combine(tables, Q1).cells
    assert cell.key == ()
    # (467,000 + 1,401,000) dollars ÷ 4,000 member months; not the mean of the carriers' PMPMs
    assert cell.figure("allowed_pmpm").value == pytest.approx(467.0)
    assert cell.figure("paid_pmpm").value == pytest.approx(400_000.01 / 4_000)
    assert all(f.complete for f in cell.figures)


def test_suppressed_statistic_makes_cell_incomplete_and_figure_not_complete() -> None:
    tables = {
        "acme": _table("cost.pmpm", (M,), _pmpm("2026-01", 1_000, 400_000, 300_000)),
        "blue": _table("cost.pmpm", (M,), _pmpm("2026-01", 600, W, 200_000)),
        "cove": _table("cost.pmpm", (M,), _pmpm("2026-01", 400, 100_000, 50_000)),
    }
    jan = _only(combine(tables, Q1), month="2026-01")
    allowed = jan.stat("allowed_cents")
    assert allowed.value == 500_000  # the released values only, never a guessed fill-in
    assert allowed.status is R
    assert jan.incomplete
    assert jan.incomplete_stats == ("allowed_cents",)
    assert jan.status is R
    assert not jan.figure("allowed_pmpm").complete
    assert jan.figure("allowed_pmpm").value == pytest.approx(5_000 / 2_000)
    paid = jan.figure("paid_pmpm")
    assert paid.complete and paid.value == pytest.approx(5_500 / 2_000)


def test_statistic_suppressed_everywhere_has_no_value_and_nan_figure() -> None:
    tables = {
        "acme": _table("cost.pmpm", (M,), _pmpm("2026-03", 20, W)),
        "blue": _table("cost.pmpm", (M,), _pmpm("2026-03", 30, W)),
    }
    cell = _only(combine(tables, Q1), month="2026-03")
    allowed = cell.stat("allowed_cents")
    assert allowed.value is None and allowed.status is W
    assert allowed.missing == Missing(2)  # two carriers, nothing said of how much
    assert cell.status is W and cell.incomplete
    fig = cell.figure("allowed_pmpm")
    assert math.isnan(fig.value) and not fig.complete
    assert cell.figure("paid_pmpm").complete


def test_a_sum_says_at_most_how_much_the_withheld_values_leave_out() -> None:
    """Member counts withheld below the floor bound what is missing (the nodes say so); a part
    withheld for its small rest is at most its whole as released (plus the count noise)."""
    small = StatValue("members", W, None, Missing(1, 10, 10, Withheld.SMALL))
    months = StatValue("member_months", W, None, Missing(1, 30, 10, Withheld.SMALL))
    rest = StatValue("claimants", W, None, Missing(1, reason=Withheld.REST))
    noisy = DisclosureSummary(min_cell_size=11, perturbation=Perturbation(5, 3.0, 10, 0.5, 1))
    tables = {
        "acme": QueryTable(
            "cost.pmpm",
            1,
            (),
            (
                CellResult(
                    (),
                    (
                        months,
                        small,
                        StatValue("claimants", R, 0),
                        StatValue("allowed_cents", R, 0),
                        StatValue("paid_cents", R, 0),
                    ),
                ),
            ),
            noisy,
        ),
        "blue": QueryTable(
            "cost.pmpm",
            1,
            (),
            (
                CellResult(
                    (),
                    (
                        StatValue("member_months", Status.PERTURBED, 7_853),
                        StatValue("members", Status.PERTURBED, 2_620),
                        rest,
                        StatValue("allowed_cents", Status.PERTURBED, 9_000_000),
                        StatValue("paid_cents", Status.PERTURBED, 8_000_000),
                    ),
                ),
            ),
            noisy,
        ),
    }
    (cell,) = combine(tables, Q1).cells
    assert cell.stat("member_months").value == 7_853
    assert cell.stat("member_months").missing == Missing(1, 30, 10)
    assert cell.stat("members").missing == Missing(1, 10, 10)
    assert cell.stat("claimants").missing == Missing(1, 2_625)  # blue's members + 5
    assert cell.stat("claimants").status is R  # acme's exact zero
    assert cell.stat("allowed_cents").missing is None
    assert cell.stat("allowed_cents").status is Status.PERTURBED


def test_statistic_absent_from_a_carriers_cell_is_incomplete() -> None:
    partial = CellResult(((M, "2026-01"),), (StatValue("member_months", R, 10),))
    tables = {
        "acme": _table("enrollment.member_months", (M,), partial),
        "blue": _table(
            "enrollment.member_months", (M,), _cell({M: "2026-01"}, member_months=90, members=30)
        ),
    }
    cell = _only(combine(tables, Q1), month="2026-01")
    assert cell.stat("members").value == 30
    assert cell.incomplete_stats == ("members",)
    assert cell.figure("average_members").complete  # rests on member_months only


def test_group_by_carrier_keys_cells_by_carrier_id() -> None:
    by = (Dimension.CARRIER, M)
    tables = {
        "blue": _table(
            "cost.pmpm",
            by,
            _cell(
                {Dimension.CARRIER: "blue", M: "2026-01"},
                member_months=5,
                members=5,
                claimants=1,
                allowed_cents=10,
                paid_cents=1,
            ),
        ),
        # a node that filled the key wrongly is still keyed by who sent the table
        "acme": _table(
            "cost.pmpm",
            by,
            _cell(
                {M: "2026-01", Dimension.CARRIER: "unknown"},
                member_months=7,
                members=7,
                claimants=1,
                allowed_cents=20,
                paid_cents=2,
            ),
        ),
    }
    program = combine(tables, Q1)
    assert [c.key for c in program.cells] == [
        ((Dimension.CARRIER, "acme"), (M, "2026-01")),
        ((Dimension.CARRIER, "blue"), (M, "2026-01")),
    ]
    assert [c.stat("member_months").value for c in program.cells] == [7, 5]


def test_tables_of_different_queries_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        combine(
            {
                "acme": _table("cost.pmpm", (M,), _pmpm("2026-01", 1, 1)),
                "blue": _table("cost.pmpm", (), _cell({}, member_months=1)),
            },
            Q1,
        )
    with pytest.raises(InvalidRequestError):
        combine({}, Q1)


def test_carrier_table_keeps_carrier_scope_and_statuses() -> None:
    table = _table("cost.pmpm", (M,), _pmpm("2026-02", 300, W, 9_000), _pmpm("2026-01", 300, 6_000))
    scoped = carrier_table("acme", table, Q1)
    assert scoped.scope == "acme"
    assert [c.key for c in scoped.cells] == [((M, "2026-01"),), ((M, "2026-02"),)]
    jan, feb = scoped.cells
    assert jan.figure("allowed_pmpm").value == pytest.approx(0.2) and not jan.incomplete
    assert feb.stat("allowed_cents").status is W and feb.status is W
    assert math.isnan(feb.figure("allowed_pmpm").value)
    assert feb.figure("paid_pmpm").value == pytest.approx(0.3)


# --- months in cell and average members -------------------------------------------------------


def test_months_in_cell() -> None:
    year = Period.parse("2025-11:2026-04")
    assert months_in_cell(((M, "2026-02"),), year) == 1
    assert months_in_cell(((M, "2027-02"),), year) == 0
    assert months_in_cell(((Dimension.QUARTER, "2026Q1"),), year) == 3
    assert months_in_cell(((Dimension.QUARTER, "2026Q2"),), year) == 1
    assert months_in_cell(((Dimension.QUARTER, "2025Q4"),), year) == 2
    assert months_in_cell(((Dimension.YEAR, "2025"),), year) == 2
    assert months_in_cell(((Dimension.SEX, "F"),), year) == 6
    assert months_in_cell((), year) == 6


def test_average_members_by_month_quarter_and_none() -> None:
    period = Period.parse("2026-01:2026-06")
    by_q = (Dimension.QUARTER,)
    tables = {
        "acme": _table(
            "enrollment.member_months",
            by_q,
            _cell({Dimension.QUARTER: "2026Q1"}, member_months=3_000, members=1_100),
            _cell({Dimension.QUARTER: "2026Q2"}, member_months=600, members=250),
        ),
        "blue": _table(
            "enrollment.member_months",
            by_q,
            _cell({Dimension.QUARTER: "2026Q1"}, member_months=1_500, members=600),
        ),
    }
    program = combine(tables, period)
    assert _only(program, quarter="2026Q1").figure("average_members").value == pytest.approx(1_500)
    assert _only(program, quarter="2026Q2").figure("average_members").value == pytest.approx(200)

    by_month = combine(
        {
            "acme": _table(
                "enrollment.member_months",
                (M,),
                _cell({M: "2026-04"}, member_months=321, members=321),
            )
        },
        period,
    )
    assert by_month.cells[0].figure("average_members").value == pytest.approx(321)

    no_time = combine(
        {
            "acme": _table(
                "enrollment.member_months",
                (Dimension.SEX,),
                _cell({Dimension.SEX: "F"}, member_months=6_000, members=1_200),
            )
        },
        period,
    )
    assert no_time.cells[0].figure("average_members").value == pytest.approx(1_000)


# --- histograms -------------------------------------------------------------------------------


def _median_dollars(inputs: FigureInputs) -> float:
    h = inputs["annual_allowed"]
    assert isinstance(h, Histogram)
    return h.percentile_dollars(0.5)


_DISTRIBUTION = MetricSpec(
    name="test.distribution",
    version=1,
    title="test distribution",
    definition="a histogram metric for tests",
    dimensions=frozenset({Dimension.SEX}),
    statistics=(
        StatisticSpec("members", StatKind.MEMBERS, "members"),
        StatisticSpec("annual_allowed", StatKind.HISTOGRAM, "per-member annual allowed"),
    ),
    figures=(FigureSpec("p50_allowed", "median", ("annual_allowed",), _median_dollars),),
)


@pytest.fixture
def histogram_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    real = catalogue.get_metric

    def get_metric(name: str, version: int | None = None) -> MetricSpec:
        return _DISTRIBUTION if name == _DISTRIBUTION.name else real(name, version)

    monkeypatch.setattr(catalogue, "get_metric", get_metric)


@pytest.mark.usefixtures("histogram_metric")
def test_histograms_merge_bin_by_bin() -> None:
    a = _hist(0, 5, 120, 120, 3_000)
    b = _hist(0, 120, 250_000)
    tables = {
        "acme": _table(_DISTRIBUTION.name, (), _cell({}, members=5, annual_allowed=a)),
        "blue": _table(_DISTRIBUTION.name, (), _cell({}, members=3, annual_allowed=b)),
    }
    (cell,) = combine(tables, Q1).cells
    merged = cell.stat("annual_allowed").value
    assert merged == a + b == _hist(0, 5, 120, 120, 3_000, 0, 120, 250_000)
    assert isinstance(merged, Histogram)
    assert merged.total_count == 8 and merged.total_cents == (5 + 360 + 3_000 + 250_000) * 100
    assert cell.figure("p50_allowed").complete
    assert cell.figure("p50_allowed").value == pytest.approx(120, rel=0.13)


@pytest.mark.usefixtures("histogram_metric")
def test_histogram_of_wrong_type_is_refused() -> None:
    tables = {"acme": _table(_DISTRIBUTION.name, (), _cell({}, members=5, annual_allowed=17))}
    with pytest.raises(InvalidRequestError):
        combine(tables, Q1)


# --- exports ----------------------------------------------------------------------------------


def _export_tables() -> list[ScopedTable]:
    carriers = {
        "acme": _table(
            "cost.pmpm",
            (M,),
            _pmpm("2026-01", 1_000, 400_000, 300_000),
            _pmpm("2026-02", 1_000, W, 1),
        ),
        "blue": _table(
            "cost.pmpm",
            (M,),
            _pmpm("2026-01", 1_000, 200_000, 100_000),
            _pmpm("2026-02", 1_000, 5, 1),
        ),
    }
    by_sex = {
        "acme": _table(
            "enrollment.member_months",
            (Dimension.SEX,),
            _cell({Dimension.SEX: "F"}, member_months=600, members=200),
        ),
    }
    return [
        combine(carriers, Q1),
        carrier_table("acme", carriers["acme"], Q1),
        combine(by_sex, Q1),
    ]


def test_tidy_rows_shape_columns_and_values() -> None:
    frame = tidy_rows(_export_tables())
    assert tuple(frame.columns) == (
        *TIDY_COLUMNS_FIXED,
        "month",
        "sex",
        "statistic",
        "value",
        "status",
        "missing_carriers",
        "missing_at_most",
        "missing_members_at_most",
        "carriers_asked",
        "carriers_answered",
        "purpose",
        "office",
        "retain_until",
    )
    # cost.pmpm: 2 scopes × 2 cells × (5 stats + 2 figures); member months: 1 cell × (2 + 1)
    assert len(frame) == 2 * 2 * 7 + 3
    rows = [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]

    def row(scope: str, month: str, statistic: str) -> dict[str, object]:
        (r,) = [
            x for x in rows if (x["scope"], x["month"], x["statistic"]) == (scope, month, statistic)
        ]
        return r

    jan_allowed = row("program", "2026-01", "allowed_cents")
    assert jan_allowed["value"] == 600_000 and type(jan_allowed["value"]) is int
    assert jan_allowed["status"] == "released"
    assert row("program", "2026-02", "allowed_cents")["status"] == "incomplete"
    assert row("program", "2026-02", "allowed_cents")["missing_carriers"] == 1
    assert row("program", "2026-02", "allowed_pmpm")["status"] == "incomplete"
    pmpm = row("program", "2026-01", "allowed_pmpm")
    assert pmpm["value"] == pytest.approx(3.0) and type(pmpm["value"]) is float
    assert pmpm["status"] == "released"
    suppressed = row("acme", "2026-02", "allowed_cents")
    assert suppressed["value"] is None and suppressed["status"] == "withheld"
    f_row = [
        x
        for x in rows
        if x["metric"] == "enrollment.member_months" and x["statistic"] == "average_members"
    ]
    assert f_row[0]["sex"] == "F" and f_row[0]["value"] == pytest.approx(200.0)


INFO = RoundInfo(
    round_id="r-1",
    period="2026-01:2026-03",
    state="partial",
    carriers_asked=3,
    carriers_answered=2,
    carriers=(
        ("acme", "answered", ""),
        ("blue", "answered", ""),
        ("cove", "refused", "the carrier's policy does not answer this"),
    ),
    purpose=Purpose("quality-oversight", "2026.1", "HEDIS-style screening rates", "quality"),
    retain_until=dt.datetime(2031, 1, 1, tzinfo=dt.UTC),
)


def test_write_csv(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(_export_tables(), path, INFO)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        body = list(reader)
    assert header == [
        "round_id",
        "period",
        "metric",
        "metric_version",
        "scope",
        "month",
        "sex",
        "statistic",
        "value",
        "status",
        "missing_carriers",
        "missing_at_most",
        "missing_members_at_most",
        "carriers_asked",
        "carriers_answered",
        "purpose",
        "office",
        "retain_until",
    ]
    assert len(body) == 31
    # Every row says why the round was asked, by whom, and until when its results are kept.
    assert {(r["purpose"], r["office"], r["retain_until"]) for r in body} == {
        ("quality-oversight", "quality", "2031-01-01T00:00:00+00:00")
    }
    assert {
        (
            r["round_id"],
            r["period"],
            r["metric_version"],
            r["carriers_asked"],
            r["carriers_answered"],
        )
        for r in body
    } == {("r-1", "2026-01:2026-03", "1", "3", "2")}
    by = {(r["scope"], r["month"], r["statistic"]): r for r in body}
    jan = by[("program", "2026-01", "allowed_cents")]
    assert jan["value"] == "600000"  # an int, not 600000.0
    withheld = by[("acme", "2026-02", "allowed_cents")]
    assert (withheld["value"], withheld["status"], withheld["missing_carriers"]) == (
        "",
        "withheld",
        "1",
    )
    assert float(by[("program", "2026-01", "paid_pmpm")]["value"]) == pytest.approx(2.0)


def test_write_parquet_types_its_columns_and_keeps_the_round(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    write_export(_export_tables(), path, INFO)
    table = pq.read_table(path)
    assert table.schema.field("value_int").type == pa.int64()
    assert table.schema.field("value").type == pa.float64()
    assert table.schema.field("missing_carriers").type == pa.int64()
    assert json.loads(table.schema.metadata[b"fedoversight.round"]) == INFO.json()
    rows = table.to_pylist()
    jan = next(
        r
        for r in rows
        if (r["scope"], r["month"], r["statistic"]) == ("program", "2026-01", "allowed_cents")
    )
    assert jan["value_int"] == 600_000 and jan["status"] == "released"
    feb = next(
        r
        for r in rows
        if (r["scope"], r["month"], r["statistic"]) == ("program", "2026-02", "allowed_cents")
    )
    assert feb["status"] == "incomplete" and feb["missing_carriers"] == 1
    pmpm = next(
        r
        for r in rows
        if r["statistic"] == "paid_pmpm" and r["scope"] == "program" and r["month"] == "2026-01"
    )
    assert pmpm["value_int"] is None and pmpm["value"] == pytest.approx(2.0)


def test_only_the_written_formats_are_accepted(tmp_path: Path) -> None:
    for name in ("out.xlsx", "out.txt", "out"):
        with pytest.raises(InvalidRequestError, match="cannot export"):
            write_export(_export_tables(), tmp_path / name, INFO)
        assert not (tmp_path / name).exists()


@pytest.mark.usefixtures("histogram_metric")
def test_histograms_left_out_of_tidy_rows_and_listed_in_json(tmp_path: Path) -> None:
    h = _hist(10, 20, 20_000)
    scoped = combine(
        {"acme": _table(_DISTRIBUTION.name, (), _cell({}, members=3, annual_allowed=h))}, Q1
    )
    frame = tidy_rows([scoped])
    assert list(frame["statistic"]) == ["members", "p50_allowed"]
    path = tmp_path / "out.json"
    write_json([scoped], path)
    doc = json.loads(path.read_text())["tables"]
    stat = doc[0]["cells"][0]["statistics"][1]
    assert stat["name"] == "annual_allowed"
    assert stat["value"] == {
        "counts": list(h.counts),
        "sums_cents": list(h.sums_cents),
        "withheld_bins": [],
    }


def test_write_json_round_trips(tmp_path: Path) -> None:
    tables = _export_tables()
    path = tmp_path / "out.json"
    write_json(tables, path, INFO)
    document = json.loads(path.read_text())  # strict JSON: a NaN figure is written as null
    assert document["round"] == INFO.json()
    doc = document["tables"]
    assert [(t["scope"], t["metric"], t["version"]) for t in doc] == [
        ("program", "cost.pmpm", 1),
        ("acme", "cost.pmpm", 1),
        ("program", "enrollment.member_months", 1),
    ]
    assert doc[0]["group_by"] == ["month"]
    jan, feb = doc[0]["cells"]
    assert (
        jan["key"] == {"month": "2026-01"} and jan["status"] == "released" and not jan["incomplete"]
    )
    assert {s["name"]: s["value"] for s in jan["statistics"]}["allowed_cents"] == 600_000
    assert feb["incomplete"]
    assert {f["name"]: f["complete"] for f in feb["figures"]} == {
        "allowed_pmpm": False,
        "paid_pmpm": True,
    }
    acme_feb = doc[1]["cells"][1]
    allowed = {s["name"]: s for s in acme_feb["statistics"]}["allowed_cents"]
    assert allowed == {
        "name": "allowed_cents",
        "status": "withheld",
        "incomplete": True,
        "missing": {"carriers": 1, "at_most": None, "members_at_most": None},
        "value": None,
    }
    assert {f["name"]: f["value"] for f in acme_feb["figures"]}["allowed_pmpm"] is None
