"""Sanity tests of the oracle on tiny tables whose answers are worked out by hand here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedoversight.catalogue import StatKind, get_metric, metric_names
from fedoversight.dimensions import Dimension
from fedoversight.histogram import N_BINS, Histogram, bin_index
from fedoversight.periods import Period
from fedoversight.testing.oracle import METRICS, compute, load_carrier, service_categories_of

Q1 = Period.parse("2024Q1")
D = Dimension


def _eligibility(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    columns = [
        "member_id",
        "program",
        "plan_code",
        "birth_date",
        "sex",
        "state",
        "enrollment_start_date",
        "enrollment_end_date",
        "medicare_primary",
        "enrollee_type",
    ]
    return pd.DataFrame(rows, columns=columns)


def _medical(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    columns = [
        "claim_id",
        "claim_line",
        "claim_status",
        "member_id",
        "claim_type",
        "claim_start_date",
        "place_of_service",
        "bill_type",
        "revenue_code",
        "hcpcs",
        "drg",
        "allowed_amount",
        "paid_amount",
    ]
    return pd.DataFrame(rows, columns=columns)


def _pharmacy(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    columns = [
        "claim_id",
        "claim_status",
        "member_id",
        "fill_date",
        "allowed_amount",
        "paid_amount",
    ]
    return pd.DataFrame(rows, columns=columns)


def _alpha() -> dict[str, pd.DataFrame]:
    eligibility = _eligibility(
        [
            # M1: partial January and February, then a plan switch on 11 February.
            (
                "M1",
                "FEHB",
                "A1",
                "1980-02-15",
                "F",
                "VA",
                "2024-01-20",
                "2024-02-10",
                "N",
                "active",
            ),
            ("M1", "FEHB", "B2", "1980-02-15", "F", "VA", "2024-02-11", None, "N", "active"),
            # M2: January, a gap in February, one day of March; turns 45 on 1 March.
            (
                "M2",
                "PSHB",
                "C3",
                "1979-03-01",
                "M",
                None,
                "2023-06-01",
                "2024-01-31",
                "Y",
                "annuitant",
            ),
            ("M2", "PSHB", "C3", "1979-03-01", "M", None, "2024-03-31", None, "Y", "annuitant"),
            ("M3", "FEHB", "A1", "2010-07-04", "M", "MD", "2023-01-01", "2024-12-31", "N", None),
            # M4: enrolled only after the period.
            ("M4", "FEHB", "A1", "1990-05-05", "F", "VA", "2024-04-01", None, "N", "active"),
        ]
    )
    medical = _medical(
        [
            (
                "C1",
                1,
                "paid",
                "M1",
                "professional",
                "2024-01-25",
                "11",
                None,
                None,
                "99213",
                None,
                "120.50",
                "100.00",
            ),
            (
                "C2",
                1,
                "paid",
                "M1",
                "institutional",
                "2024-02-20",
                None,
                "131",
                "0450",
                None,
                None,
                "1500.00",
                "1200.00",
            ),
            (
                "C2",
                1,
                "reversed",
                "M1",
                "institutional",
                "2024-02-20",
                None,
                "131",
                "0450",
                None,
                None,
                "-1500.00",
                "-1200.00",
            ),
            (
                "C2",
                1,
                "adjusted",
                "M1",
                "institutional",
                "2024-02-20",
                None,
                "131",
                "0450",
                None,
                None,
                "1400.00",
                "1100.00",
            ),
            (
                "C3",
                1,
                "paid",
                "M3",
                "professional",
                "2024-03-05",
                "81",
                None,
                None,
                "80053",
                None,
                "250.00",
                "200.00",
            ),
            (
                "C3",
                1,
                "reversed",
                "M3",
                "professional",
                "2024-03-05",
                "81",
                None,
                None,
                "80053",
                None,
                "-250.00",
                "-200.00",
            ),
            (
                "C4",
                1,
                "paid",
                "M2",
                "institutional",
                "2024-01-10",
                None,
                "111",
                None,
                None,
                "470",
                "25000.00",
                "22000.00",
            ),
            # Outside enrollment: M2 in February, M4 in March; M3 before the period.
            (
                "C5",
                1,
                "paid",
                "M2",
                "professional",
                "2024-02-15",
                "11",
                None,
                None,
                "99214",
                None,
                "90.00",
                "70.00",
            ),
            (
                "C6",
                1,
                "paid",
                "M4",
                "professional",
                "2024-03-15",
                "11",
                None,
                None,
                "99214",
                None,
                "90.00",
                "70.00",
            ),
            (
                "C7",
                1,
                "paid",
                "M3",
                "professional",
                "2023-12-31",
                "11",
                None,
                None,
                "99214",
                None,
                "90.00",
                "70.00",
            ),
            # Matches no rule: other.
            (
                "C8",
                1,
                "paid",
                "M3",
                "professional",
                "2024-01-08",
                "49",
                None,
                None,
                None,
                None,
                "10.00",
                "8.00",
            ),
        ]
    )
    pharmacy = _pharmacy(
        [
            ("R1", "paid", "M1", "2024-03-03", "45.67", "40.00"),
            ("R2", "denied", "M3", "2024-02-10", "0.00", "0.00"),
        ]
    )
    return {"eligibility": eligibility, "medical_claims": medical, "pharmacy_claims": pharmacy}


def _beta() -> dict[str, pd.DataFrame]:
    eligibility = _eligibility(
        [
            (
                "N1",
                "FEHB",
                "A1",
                "1950-01-01",
                "F",
                "VA",
                "2024-02-01",
                "2024-02-29",
                "Y",
                "annuitant",
            )
        ]
    )
    medical = _medical(
        [
            (
                "D1",
                1,
                "paid",
                "N1",
                "professional",
                "2024-02-02",
                "11",
                None,
                None,
                "99213",
                None,
                "100.00",
                "80.00",
            )
        ]
    )
    pharmacy = _pharmacy(
        [
            ("S1", "paid", "N1", "2024-02-28", "12.34", "10.00"),
            ("S2", "paid", "N1", "2024-03-01", "99.00", "90.00"),  # after enrollment ended
        ]
    )
    return {"eligibility": eligibility, "medical_claims": medical, "pharmacy_claims": pharmacy}


def _carriers() -> dict[str, dict[str, pd.DataFrame]]:
    return {"alpha": _alpha(), "beta": _beta()}


def _rows(frame: pd.DataFrame) -> set[tuple[object, ...]]:
    return {tuple(row) for row in frame.itertuples(index=False)}


def test_member_months_partial_months_gaps_and_scopes() -> None:
    out = compute("enrollment.member_months", _carriers(), Q1, [])
    assert list(out.columns) == ["scope", "member_months", "members"]
    # alpha: M1 Jan-Mar, M2 Jan and Mar, M3 Jan-Mar, M4 none; beta: N1 Feb.
    assert _rows(out) == {("alpha", 8, 3), ("beta", 1, 1), ("program", 9, 4)}
    assert list(out["scope"]) == ["alpha", "beta", "program"]
    assert str(out["member_months"].dtype) == "int64"


def test_plan_switch_mid_month_takes_the_latest_span() -> None:
    out = compute("enrollment.member_months", _carriers(), Q1, [D.PLAN_CODE, D.MONTH])
    alpha = _rows(out[out["scope"] == "alpha"])
    # M1 is A1 in January but B2 in February (both spans touch February; B2 starts later).
    assert alpha == {
        ("alpha", "A1", "2024-01", 2, 2),
        ("alpha", "A1", "2024-02", 1, 1),
        ("alpha", "A1", "2024-03", 1, 1),
        ("alpha", "B2", "2024-02", 1, 1),
        ("alpha", "B2", "2024-03", 1, 1),
        ("alpha", "C3", "2024-01", 1, 1),
        ("alpha", "C3", "2024-03", 1, 1),
    }
    by_plan = compute("enrollment.member_months", _carriers(), Q1, [D.PLAN_CODE])
    assert _rows(by_plan[by_plan["scope"] == "program"]) == {
        ("program", "A1", 5, 3),
        ("program", "B2", 2, 1),
        ("program", "C3", 2, 1),
    }


def test_equal_starts_go_to_the_greatest_plan_code() -> None:
    tables = _alpha()
    tables["eligibility"] = _eligibility(
        [
            ("M9", "FEHB", "A1", "1980-01-01", "F", "VA", "2024-01-01", "2024-01-31", "N", None),
            ("M9", "FEHB", "Z9", "1980-01-01", "F", "VA", "2024-01-01", "2024-01-31", "N", None),
            ("M9", "FEHB", "K5", "1980-01-01", "F", "VA", "2024-01-01", "2024-01-31", "N", None),
        ]
    )
    out = compute("enrollment.member_months", {"c": tables}, Q1, [D.PLAN_CODE])
    assert _rows(out) == {("c", "Z9", 1, 1), ("program", "Z9", 1, 1)}


def test_age_on_the_first_day_of_the_month() -> None:
    out = compute("enrollment.member_months", {"alpha": _alpha()}, Q1, [D.MONTH, D.AGE_BAND])
    alpha = _rows(out[out["scope"] == "alpha"])
    # M2 turns 45 on 1 March, so March is already 45-64; M3 is a child; M1 is 43-44.
    assert alpha == {
        ("alpha", "2024-01", "0-17", 1, 1),
        ("alpha", "2024-01", "26-44", 2, 2),
        ("alpha", "2024-02", "0-17", 1, 1),
        ("alpha", "2024-02", "26-44", 1, 1),
        ("alpha", "2024-03", "0-17", 1, 1),
        ("alpha", "2024-03", "26-44", 1, 1),
        ("alpha", "2024-03", "45-64", 1, 1),
    }


def test_born_after_the_first_day_has_no_band_that_month() -> None:
    tables = _alpha()
    tables["eligibility"] = _eligibility(
        [("B1", "FEHB", "A1", "2024-02-10", "F", "VA", "2024-02-10", None, "N", None)]
    )
    out = compute("enrollment.member_months", {"c": tables}, Q1, [D.MONTH, D.AGE_BAND])
    assert _rows(out[out["scope"] == "c"]) == {
        ("c", "2024-02", "unknown", 1, 1),
        ("c", "2024-03", "0-17", 1, 1),
    }


def test_dimension_values_as_the_wire_spells_them() -> None:
    dims = [
        D.CARRIER,
        D.PROGRAM,
        D.QUARTER,
        D.YEAR,
        D.SEX,
        D.STATE,
        D.MEDICARE_PRIMARY,
        D.ENROLLEE_TYPE,
    ]
    out = compute("enrollment.member_months", _carriers(), Q1, dims)
    assert _rows(out[out["scope"] == "alpha"]) == {
        ("alpha", "alpha", "FEHB", "2024Q1", "2024", "F", "VA", "N", "active", 3, 1),
        ("alpha", "alpha", "PSHB", "2024Q1", "2024", "M", "unknown", "Y", "annuitant", 2, 1),
        ("alpha", "alpha", "FEHB", "2024Q1", "2024", "M", "MD", "N", "unknown", 3, 1),
    }
    assert ("program", "beta", "FEHB", "2024Q1", "2024", "F", "VA", "Y", "annuitant", 1, 1) in (
        _rows(out[out["scope"] == "program"])
    )


ALPHA_ALLOWED = 12050 + 140000 + 0 + 2500000 + 1000 + 4567
ALPHA_PAID = 10000 + 110000 + 0 + 2200000 + 800 + 4000


def test_cost_pmpm_totals_exclude_claims_outside_enrollment() -> None:
    out = compute("cost.pmpm", _carriers(), Q1, [])
    assert list(out.columns) == [
        "scope",
        "member_months",
        "members",
        "claimants",
        "allowed_cents",
        "paid_cents",
    ]
    assert _rows(out) == {
        ("alpha", 8, 3, 3, ALPHA_ALLOWED, ALPHA_PAID),
        ("beta", 1, 1, 1, 10000 + 1234, 8000 + 1000),
        ("program", 9, 4, 4, ALPHA_ALLOWED + 11234, ALPHA_PAID + 9000),
    }


def test_cost_pmpm_by_month_reversals_net_out_and_claims_take_month_attributes() -> None:
    out = compute("cost.pmpm", {"alpha": _alpha()}, Q1, [D.MONTH])
    assert _rows(out[out["scope"] == "alpha"]) == {
        # M1 office visit, M2 surgical stay, M3 unclassified line.
        ("alpha", "2024-01", 3, 3, 3, 12050 + 2500000 + 1000, 10000 + 2200000 + 800),
        # M1 ED after a reversal and an adjustment; M3's denied fill makes M3 a claimant.
        ("alpha", "2024-02", 2, 2, 2, 140000, 110000),
        # M3's lab claim and its reversal net to zero; M1's fill.
        ("alpha", "2024-03", 3, 3, 2, 4567, 4000),
    }


def test_reversal_netting_to_zero_keeps_the_claimant() -> None:
    out = compute(
        "cost.pmpm_by_service_category",
        {"alpha": _alpha()},
        Q1,
        [D.SERVICE_CATEGORY_2],
        filters={D.SERVICE_CATEGORY_2: ["lab"]},
    )
    assert _rows(out) == {("alpha", "lab", 8, 3, 1, 0, 0), ("program", "lab", 8, 3, 1, 0, 0)}


def test_filters_keep_member_months_and_their_claims() -> None:
    out = compute("cost.pmpm", {"alpha": _alpha()}, Q1, [], filters={D.PLAN_CODE: ["A1"]})
    # M1 January and M3 all quarter; M1's February ED (plan B2) is out.
    assert _rows(out[out["scope"] == "alpha"]) == {("alpha", 4, 2, 2, 12050 + 1000, 10800)}


def test_service_categories_add_up_to_the_total() -> None:
    carriers = _carriers()
    total = compute("cost.pmpm", carriers, Q1, [])
    for level in (D.SERVICE_CATEGORY, D.SERVICE_CATEGORY_2):
        by_category = compute("cost.pmpm_by_service_category", carriers, Q1, [level])
        for scope, row in total.set_index("scope").iterrows():
            cells = by_category[by_category["scope"] == scope]
            assert cells["allowed_cents"].sum() == row["allowed_cents"]
            assert cells["paid_cents"].sum() == row["paid_cents"]
            # Every category divides the total member months of its other keys.
            assert set(cells["member_months"]) == {row["member_months"]}
            assert set(cells["members"]) == {row["members"]}
    level_1 = compute(
        "cost.pmpm_by_service_category", {"alpha": _alpha()}, Q1, [D.SERVICE_CATEGORY]
    )
    assert _rows(level_1[level_1["scope"] == "alpha"]) == {
        ("alpha", "office-based", 8, 3, 1, 12050, 10000),
        ("alpha", "outpatient", 8, 3, 1, 140000, 110000),
        ("alpha", "ancillary", 8, 3, 1, 0, 0),
        ("alpha", "inpatient", 8, 3, 1, 2500000, 2200000),
        ("alpha", "other", 8, 3, 1, 1000, 800),
        ("alpha", "pharmacy", 8, 3, 2, 4567, 4000),
    }


def test_category_cells_take_the_member_months_of_their_other_keys() -> None:
    """Every category is a cell of every month with member months (zero where nobody had a
    claim in it), dividing the month's member months."""
    out = compute(
        "cost.pmpm_by_service_category", {"alpha": _alpha()}, Q1, [D.MONTH, D.SERVICE_CATEGORY]
    )
    mine = out[out["scope"] == "alpha"]
    assert _rows(mine[mine["claimants"] > 0]) == {
        ("alpha", "2024-01", "office-based", 3, 3, 1, 12050, 10000),
        ("alpha", "2024-01", "inpatient", 3, 3, 1, 2500000, 2200000),
        ("alpha", "2024-01", "other", 3, 3, 1, 1000, 800),
        ("alpha", "2024-02", "outpatient", 2, 2, 1, 140000, 110000),
        ("alpha", "2024-02", "pharmacy", 2, 2, 1, 0, 0),
        ("alpha", "2024-03", "ancillary", 3, 3, 1, 0, 0),
        ("alpha", "2024-03", "pharmacy", 3, 3, 1, 4567, 4000),
    }
    categories = ("ancillary", "inpatient", "office-based", "other", "outpatient", "pharmacy")
    assert {(r[1], r[2]) for r in _rows(mine)} == {
        (m, c) for m in ("2024-01", "2024-02", "2024-03") for c in categories
    }
    zeros = mine[mine["claimants"] == 0]
    assert (zeros["allowed_cents"] == 0).all() and len(zeros) == 18 - 7
    months = {"2024-01": 3, "2024-02": 2, "2024-03": 3}
    assert all(months[r.month] == r.member_months for r in zeros.itertuples())


def test_service_category_priority() -> None:
    lines = _medical(
        [
            # (claim_type, place_of_service, bill_type, revenue_code, hcpcs, drg)
            (
                "a",
                1,
                "paid",
                "X",
                "institutional",
                "2024-01-01",
                None,
                "131",
                "0450",
                None,
                None,
                "1",
                "1",
            ),
            (
                "b",
                1,
                "paid",
                "X",
                "institutional",
                "2024-01-01",
                None,
                "111",
                None,
                None,
                "470",
                "1",
                "1",
            ),
            (
                "c",
                1,
                "paid",
                "X",
                "professional",
                "2024-01-01",
                "11",
                None,
                None,
                "99213",
                None,
                "1",
                "1",
            ),
            (
                "d",
                1,
                "paid",
                "X",
                "professional",
                "2024-01-01",
                "11",
                None,
                None,
                "80053",
                None,
                "1",
                "1",
            ),
            (
                "e",
                1,
                "paid",
                "X",
                "institutional",
                "2024-01-01",
                None,
                "111",
                None,
                None,
                "885",
                "1",
                "1",
            ),
            (
                "f",
                1,
                "paid",
                "X",
                "institutional",
                "2024-01-01",
                None,
                "131",
                "0300",
                None,
                None,
                "1",
                "1",
            ),
            (
                "g",
                1,
                "paid",
                "X",
                "professional",
                "2024-01-01",
                "11",
                None,
                None,
                "9921",
                None,
                "1",
                "1",
            ),
            (
                "h",
                1,
                "paid",
                "X",
                "professional",
                "2024-01-01",
                "49",
                None,
                None,
                None,
                None,
                "1",
                "1",
            ),
            (
                "i",
                1,
                "paid",
                "X",
                "professional",
                "2024-01-01",
                "23",
                None,
                None,
                "99283",
                None,
                "1",
                "1",
            ),
            (
                "j",
                1,
                "paid",
                "X",
                "institutional",
                "2024-01-01",
                None,
                "111",
                None,
                None,
                "291",
                "1",
                "1",
            ),
            (
                "k",
                1,
                "paid",
                "X",
                "professional",
                "2024-01-01",
                "02",
                None,
                None,
                "99213",
                None,
                "1",
                "1",
            ),
        ]
    )
    got = service_categories_of(lines)
    pairs = list(zip(got["service_category"], got["service_category_2"], strict=True))
    assert pairs == [
        ("outpatient", "emergency department"),  # ED (27) before outpatient hospital (49)
        ("inpatient", "acute inpatient"),  # surgical DRG 470
        ("office-based", "office-based visit"),
        ("ancillary", "lab"),  # lab HCPCS (5) before office-based other (38)
        ("inpatient", "inpatient psychiatric"),  # psychiatric DRG (14) before medical (20)
        ("ancillary", "lab"),  # lab revenue 0300 (5) before outpatient hospital (49)
        ("office-based", "office-based other"),  # 4-character code outside 99202-99215
        ("other", "other"),
        ("outpatient", "emergency department"),
        ("inpatient", "acute inpatient"),  # medical DRG 291
        ("office-based", "telehealth visit"),
    ]


def test_invalid_queries_are_refused() -> None:
    with pytest.raises(ValueError):
        compute("cost.pmpm_by_service_category", _carriers(), Q1, [D.MONTH])
    with pytest.raises(ValueError):
        compute("cost.pmpm", _carriers(), Q1, [D.SERVICE_CATEGORY])
    with pytest.raises(ValueError):
        compute("no.such_metric", _carriers(), Q1, [])


def _write(tables: dict[str, pd.DataFrame], directory: Path, parquet: bool) -> None:
    directory.mkdir()
    money = {"allowed_amount", "paid_amount"}
    dates = {
        "birth_date",
        "enrollment_start_date",
        "enrollment_end_date",
        "claim_start_date",
        "fill_date",
    }
    for name, frame in tables.items():
        if not parquet:
            frame.to_csv(directory / f"{name}.csv", index=False)
            continue
        arrays = {}
        for column in frame.columns:
            values = [None if pd.isna(v) else v for v in frame[column]]
            if column in money:
                arrays[column] = pa.array([Decimal(str(v)) for v in values], pa.decimal128(12, 2))
            elif column in dates:
                arrays[column] = pa.array(
                    [None if v is None else dt.date.fromisoformat(v) for v in values]
                )
            elif column == "claim_line":
                arrays[column] = pa.array(values, pa.int32())
            else:
                arrays[column] = pa.array(values, pa.string())
        pq.write_table(pa.table(arrays), directory / f"{name}.parquet")


def test_load_carrier_reads_csv_and_parquet_alike(tmp_path: Path) -> None:
    _write(_alpha(), tmp_path / "csv", parquet=False)
    _write(_alpha(), tmp_path / "parquet", parquet=True)
    from_csv, from_parquet = load_carrier(tmp_path / "csv"), load_carrier(tmp_path / "parquet")
    assert from_csv["medical_claims"]["revenue_code"].dropna().tolist() == ["0450"] * 3
    assert from_csv["medical_claims"]["allowed_amount"].iloc[0] == Decimal("120.50")
    expected = compute(
        "cost.pmpm_by_service_category", {"alpha": _alpha()}, Q1, [D.MONTH, D.SERVICE_CATEGORY_2]
    )
    for loaded in (from_csv, from_parquet):
        got = compute(
            "cost.pmpm_by_service_category", {"alpha": loaded}, Q1, [D.MONTH, D.SERVICE_CATEGORY_2]
        )
        pd.testing.assert_frame_equal(got, expected)
    with pytest.raises(FileNotFoundError):
        load_carrier(tmp_path)


# ---------------------------------------------------------------------------------------------
# Metric catalogue v1: tiny carriers built from keyword rows, answers worked out by hand


_Rows = Sequence[Mapping[str, object]]


def _frame(defaults: dict[str, object], rows: _Rows) -> pd.DataFrame:
    return pd.DataFrame([{**defaults, **row} for row in rows], columns=list(defaults))


def _people(rows: _Rows) -> pd.DataFrame:
    defaults: dict[str, object] = {
        "member_id": None,
        "program": "FEHB",
        "plan_code": "A1",
        "birth_date": "1970-06-15",
        "sex": "F",
        "state": "VA",
        "enrollment_start_date": "2020-01-01",
        "enrollment_end_date": None,
        "medicare_primary": "N",
        "enrollee_type": "active",
        "death_date": None,
    }
    return _frame(defaults, rows)


def _lines(rows: _Rows) -> pd.DataFrame:
    defaults: dict[str, object] = {
        "claim_id": None,
        "claim_line": 1,
        "claim_status": "paid",
        "member_id": None,
        "claim_type": "professional",
        "claim_start_date": None,
        "claim_end_date": None,
        "admission_date": None,
        "discharge_date": None,
        "place_of_service": None,
        "bill_type": None,
        "revenue_code": None,
        "hcpcs": None,
        "drg": None,
        "dx1": None,
        "dx2": None,
        "facility_npi": None,
        "in_network": "true",
        "charge_amount": "100.00",
        "allowed_amount": "50.00",
        "paid_amount": "40.00",
        "paid_date": None,
        "deductible_amount": None,
        "coinsurance_amount": None,
        "copay_amount": None,
        "claim_version": None,
    }
    frame = _frame(defaults, rows)
    frame["claim_end_date"] = frame["claim_end_date"].fillna(frame["claim_start_date"])
    return frame


def _fills(rows: _Rows) -> pd.DataFrame:
    defaults: dict[str, object] = {
        "claim_id": None,
        "claim_status": "paid",
        "member_id": None,
        "fill_date": None,
        "paid_date": None,
        "ndc": "00000000000",
        "drug_class": "other",
        "quantity": 30,
        "days_supply": 30,
        "generic": "true",
        "specialty": "false",
        "channel": "retail",
        "allowed_amount": "10.00",
        "paid_amount": "8.00",
        "member_paid_amount": "2.00",
    }
    return _frame(defaults, rows)


def _carrier(
    people: _Rows, lines: _Rows | None = None, fills: _Rows | None = None
) -> dict[str, pd.DataFrame]:
    return {
        "eligibility": _people(people),
        "medical_claims": _lines(lines or []),
        "pharmacy_claims": _fills(fills or []),
    }


def _one(
    metric: str,
    tables: dict[str, pd.DataFrame],
    period: Period,
    group_by: list[Dimension] | None = None,
    filters: Mapping[Dimension, Sequence[str]] | None = None,
    parameters: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The metric for one carrier ``c``: its rows (the program rows must be the same)."""
    out = compute(metric, {"c": tables}, period, group_by or [], filters, parameters)
    mine, program = out[out["scope"] == "c"], out[out["scope"] == "program"]
    pd.testing.assert_frame_equal(
        mine.drop(columns="scope").reset_index(drop=True),
        program.drop(columns="scope").reset_index(drop=True),
    )
    return mine.drop(columns="scope").reset_index(drop=True)


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [
        {k: (int(v) if isinstance(v, np.integer) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def test_every_catalogue_metric_is_in_the_oracle_with_its_statistics_and_dimensions() -> None:
    kinds = {
        "rows": {StatKind.COUNT},
        "members": {StatKind.MEMBERS},
        "sum": {StatKind.CENTS, StatKind.COUNT, StatKind.AMOUNT},
        "histogram": {StatKind.HISTOGRAM},
    }
    assert set(METRICS) == set(metric_names())
    for name, spec in METRICS.items():
        declared = get_metric(name)
        assert [s.name for s in spec.statistics] == [s.name for s in declared.statistics], name
        for mine, theirs in zip(spec.statistics, declared.statistics, strict=True):
            assert theirs.kind in kinds[mine.how], (name, mine.name)
        assert spec.dimensions == declared.dimensions, name
        assert spec.one_of == declared.one_of, name
        assert dict(spec.parameters) == {p.name: p.default for p in declared.parameters}, name


# --- acute stays and readmissions ------------------------------------------------------------


def _stay(
    claim: str, member: str, facility: str, admitted: str, discharged: str, **more: object
) -> dict[str, object]:
    return {
        "claim_id": claim,
        "member_id": member,
        "claim_type": "institutional",
        "bill_type": "111",
        "facility_npi": facility,
        "claim_start_date": admitted,
        "claim_end_date": discharged,
        "admission_date": admitted,
        "discharge_date": discharged,
        **more,
    }


def _hospital() -> dict[str, pd.DataFrame]:
    people: list[dict[str, object]] = [
        {"member_id": "S1"},
        {"member_id": "S2", "enrollment_end_date": "2024-03-31"},
        {"member_id": "S3"},
        {"member_id": "S4"},
    ]
    lines: list[dict[str, object]] = [
        # S1: two adjacent lines at F1 merge into one stay of 7 days (3 to 10 January) ...
        _stay("a", "S1", "F1", "2024-01-03", "2024-01-06"),
        _stay("b", "S1", "F1", "2024-01-07", "2024-01-10"),
        # ... then a transfer to F2 on the day of discharge (0 days: not a readmission) ...
        _stay("c", "S1", "F2", "2024-01-10", "2024-01-15"),
        # ... readmitted to F1 26 days after leaving F2, in the next month (31 days after F1).
        _stay("d", "S1", "F1", "2024-02-10", "2024-02-12"),
        # S2: discharged in March, readmitted in April, after the period and her enrollment.
        _stay("e", "S2", "F1", "2024-03-20", "2024-03-25"),
        _stay("f", "S2", "F1", "2024-04-10", "2024-04-11"),
        # S2: a stay whose final action is a reversal is no stay.
        _stay("g", "S2", "F3", "2024-02-01", "2024-02-05", claim_version=1),
        _stay(
            "g", "S2", "F3", "2024-02-01", "2024-02-05", claim_version=2, claim_status="reversed"
        ),
        # Not acute: a skilled nursing bill type, a professional line, a denied line.
        _stay("h", "S2", "F1", "2024-01-01", "2024-01-02", bill_type="211"),
        _stay("i", "S2", "F1", "2024-01-01", "2024-01-02", claim_type="professional"),
        _stay("j", "S3", "F1", "2024-03-01", "2024-03-02", claim_status="denied"),
        # S3: admitted in December, before the period; discharged 2 January.
        _stay("k", "S3", "F4", "2023-12-30", "2024-01-02"),
        # S4: a stay at another facility starting the day after a discharge is a readmission.
        _stay("l", "S4", "F1", "2024-02-01", "2024-02-03"),
        _stay("m", "S4", "F2", "2024-02-04", "2024-02-06"),
        # S4: a one-day stay (admitted and discharged the same day) still lasts 1 day; it comes
        # 43 days after S4's second stay.
        _stay("n", "S4", "F5", "2024-03-20", "2024-03-20"),
    ]
    return _carrier(people, lines)


def test_inpatient_stays_merge_adjacent_lines_and_count_in_the_month_of_their_start() -> None:
    out = _one("util.inpatient", _hospital(), Q1, [D.MONTH])
    assert _records(out) == [
        # S1: 7 + 5 days (S3's December stay is not in the period).
        {
            "month": "2024-01",
            "member_months": 4,
            "members": 4,
            "stay_members": 1,
            "stays": 2,
            "days": 12,
        },
        # S1's readmission (2 days) and S4's two stays (2 + 2).
        {
            "month": "2024-02",
            "member_months": 4,
            "members": 4,
            "stay_members": 2,
            "stays": 3,
            "days": 6,
        },
        # S2's stay (5 days) and S4's one-day stay.
        {
            "month": "2024-03",
            "member_months": 4,
            "members": 4,
            "stay_members": 2,
            "stays": 2,
            "days": 6,
        },
    ]


def test_readmissions_within_30_days_of_the_end_of_an_index_stay() -> None:
    out = _one("outcome.readmission_30d", _hospital(), Q1, [D.MONTH])
    assert _records(out) == [
        # S1 (F1 stay: next start 0 then 31 days later; F2 stay: 26 days) and S3's stay.
        {"month": "2024-01", "stay_members": 2, "index_stays": 3, "readmissions": 1},
        # S1's last stay; S4's first stay (readmitted the next day) and second.
        {"month": "2024-02", "stay_members": 2, "index_stays": 3, "readmissions": 1},
        # S2 readmitted in April (after the period); S4's one-day stay.
        {"month": "2024-03", "stay_members": 2, "index_stays": 2, "readmissions": 1},
    ]
    total = _one("outcome.readmission_30d", _hospital(), Q1)
    assert _records(total) == [{"stay_members": 4, "index_stays": 8, "readmissions": 3}]


# --- visits ----------------------------------------------------------------------------------


def test_ed_visits_once_per_member_day_final_action_only_and_reversals_net_in_dollars() -> None:
    people: list[dict[str, object]] = [{"member_id": "E1"}, {"member_id": "E2"}]
    lines: list[dict[str, object]] = [
        # E1 on 5 January: a facility line (0450) and a professional line (99284, POS 23).
        {
            "claim_id": "x1",
            "member_id": "E1",
            "claim_type": "institutional",
            "bill_type": "131",
            "revenue_code": "0450",
            "claim_start_date": "2024-01-05",
        },
        {
            "claim_id": "x2",
            "member_id": "E1",
            "place_of_service": "23",
            "hcpcs": "99284",
            "claim_start_date": "2024-01-05",
        },
        {
            "claim_id": "x3",
            "member_id": "E1",
            "claim_type": "institutional",
            "bill_type": "131",
            "revenue_code": "0981",
            "claim_start_date": "2024-01-20",
        },
        # Not ED: urgent care revenue 0456; a revenue code without its leading zero.
        {
            "claim_id": "x4",
            "member_id": "E1",
            "claim_type": "institutional",
            "bill_type": "131",
            "revenue_code": "0456",
            "claim_start_date": "2024-02-01",
        },
        {
            "claim_id": "x5",
            "member_id": "E1",
            "claim_type": "institutional",
            "bill_type": "131",
            "revenue_code": "450",
            "claim_start_date": "2024-03-03",
        },
        # Denied.
        {
            "claim_id": "x6",
            "member_id": "E1",
            "hcpcs": "99285",
            "claim_status": "denied",
            "allowed_amount": "0.00",
            "paid_amount": "0.00",
            "claim_start_date": "2024-02-10",
        },
        # Paid, reversed and adjusted: one visit; 450 dollars net.
        {
            "claim_id": "x7",
            "member_id": "E1",
            "hcpcs": "99283",
            "claim_version": 1,
            "allowed_amount": "500.00",
            "claim_start_date": "2024-03-15",
        },
        {
            "claim_id": "x7",
            "member_id": "E1",
            "hcpcs": "99283",
            "claim_version": 2,
            "claim_status": "reversed",
            "allowed_amount": "-500.00",
            "paid_amount": "-40.00",
            "claim_start_date": "2024-03-15",
        },
        {
            "claim_id": "x7",
            "member_id": "E1",
            "hcpcs": "99283",
            "claim_version": 3,
            "claim_status": "adjusted",
            "allowed_amount": "450.00",
            "claim_start_date": "2024-03-15",
        },
        # Paid then reversed: no visit, no dollars.
        {
            "claim_id": "x8",
            "member_id": "E1",
            "hcpcs": "99283",
            "claim_version": 1,
            "allowed_amount": "300.00",
            "claim_start_date": "2024-03-20",
        },
        {
            "claim_id": "x8",
            "member_id": "E1",
            "hcpcs": "99283",
            "claim_version": 2,
            "claim_status": "reversed",
            "allowed_amount": "-300.00",
            "paid_amount": "-40.00",
            "claim_start_date": "2024-03-20",
        },
        # Another member on the same day is another visit.
        {
            "claim_id": "x9",
            "member_id": "E2",
            "claim_type": "institutional",
            "bill_type": "131",
            "revenue_code": "0452",
            "claim_start_date": "2024-01-05",
        },
    ]
    tables = _carrier(people, lines)
    out = _one("util.ed_visits", tables, Q1, [D.MONTH])
    assert _records(out) == [
        {"month": "2024-01", "member_months": 2, "members": 2, "visit_members": 2, "visits": 3},
        {"month": "2024-02", "member_months": 2, "members": 2, "visit_members": 0, "visits": 0},
        {"month": "2024-03", "member_months": 2, "members": 2, "visit_members": 1, "visits": 1},
    ]
    cost = _one("cost.pmpm", tables, Q1, [D.MONTH])
    march = cost[cost["month"] == "2024-03"]
    # x5 50.00 + x7 (500 - 500 + 450) + x8 (300 - 300).
    assert int(march["allowed_cents"].iloc[0]) == 5000 + 45000


def test_office_and_telehealth_visits() -> None:
    lines: list[dict[str, object]] = [
        {
            "claim_id": "o1",
            "member_id": "O1",
            "place_of_service": "11",
            "hcpcs": "99213",
            "claim_start_date": "2024-01-02",
        },
        {
            "claim_id": "o2",
            "member_id": "O1",
            "place_of_service": "11",
            "hcpcs": "99214",
            "claim_start_date": "2024-01-02",
        },  # same member and day: one office visit
        {
            "claim_id": "o3",
            "member_id": "O1",
            "place_of_service": "02",
            "hcpcs": "99214",
            "claim_start_date": "2024-01-02",
        },  # and one telehealth visit
        {
            "claim_id": "o4",
            "member_id": "O1",
            "place_of_service": "10",
            "hcpcs": "99215",
            "claim_start_date": "2024-02-03",
        },
        {
            "claim_id": "o5",
            "member_id": "O1",
            "place_of_service": "11",
            "hcpcs": "99201",
            "claim_start_date": "2024-02-04",
        },  # outside 99202-99215
        {
            "claim_id": "o6",
            "member_id": "O1",
            "place_of_service": "11",
            "hcpcs": "99216",
            "claim_start_date": "2024-02-05",
        },
        {
            "claim_id": "o7",
            "member_id": "O1",
            "place_of_service": "22",
            "hcpcs": "99213",
            "claim_start_date": "2024-02-06",
        },  # outpatient hospital
        {
            "claim_id": "o8",
            "member_id": "O1",
            "place_of_service": "11",
            "hcpcs": "99202",
            "claim_start_date": "2024-03-01",
        },
        {
            "claim_id": "o9",
            "member_id": "O2",
            "place_of_service": "11",
            "hcpcs": "99213",
            "claim_start_date": "2024-03-01",
            "claim_status": "denied",
        },
    ]
    out = _one(
        "util.office_visits", _carrier([{"member_id": "O1"}, {"member_id": "O2"}], lines), Q1
    )
    assert _records(out) == [
        {
            "member_months": 6,
            "members": 2,
            "visit_members": 1,
            "office_visits": 2,
            "telehealth_visits": 2,
        }
    ]


# --- enrollment churn ------------------------------------------------------------------------


def test_churn_adds_terms_and_deaths_look_outside_the_period() -> None:
    people: list[dict[str, object]] = [
        {"member_id": "A1", "enrollment_start_date": "2024-03-15"},
        {
            "member_id": "T1",
            "enrollment_start_date": "2023-01-01",
            "enrollment_end_date": "2024-02-10",
        },
        {
            "member_id": "D1",
            "enrollment_start_date": "2023-01-01",
            "enrollment_end_date": "2024-03-20",
            "death_date": "2024-03-20",
        },
        {
            "member_id": "G1",
            "enrollment_start_date": "2023-06-01",
            "enrollment_end_date": "2024-01-31",
        },
        {"member_id": "G1", "enrollment_start_date": "2024-03-01"},
        # A plan switch is neither an add nor a term.
        {
            "member_id": "P1",
            "enrollment_start_date": "2023-01-01",
            "enrollment_end_date": "2024-02-29",
        },
        {"member_id": "P1", "plan_code": "B2", "enrollment_start_date": "2024-03-01"},
        # Enrolled from February to April: an add (January) and a term (May, after the period).
        {
            "member_id": "E1",
            "enrollment_start_date": "2024-02-01",
            "enrollment_end_date": "2024-04-30",
        },
        # One day of January is enough: no add in February.
        {"member_id": "B1", "enrollment_start_date": "2024-01-31"},
        # Added twice in the period: one distinct member over the period.
        {
            "member_id": "G2",
            "enrollment_start_date": "2024-02-01",
            "enrollment_end_date": "2024-02-29",
        },
        {"member_id": "G2", "enrollment_start_date": "2024-04-01"},
    ]
    tables = _carrier(people)
    period = Period.parse("2024-02:2024-04")
    by_month = _one("enrollment.churn", tables, period, [D.MONTH])
    assert _records(by_month) == [
        {"month": "2024-02", "member_months": 6, "members": 6, "adds": 2, "terms": 2, "deaths": 0},
        {"month": "2024-03", "member_months": 6, "members": 6, "adds": 2, "terms": 1, "deaths": 1},
        {"month": "2024-04", "member_months": 6, "members": 6, "adds": 1, "terms": 1, "deaths": 0},
    ]
    total = _one("enrollment.churn", tables, period)
    assert _records(total) == [
        {"member_months": 18, "members": 8, "adds": 4, "terms": 4, "deaths": 1}
    ]


# --- cost share, distribution, high-cost claimants, network ----------------------------------


def test_member_cost_share_counts_missing_amounts_as_zero() -> None:
    lines: list[dict[str, object]] = [
        {
            "claim_id": "m1",
            "member_id": "K1",
            "claim_start_date": "2024-01-10",
            "deductible_amount": "10.00",
            "copay_amount": "20.00",
        },
        {"claim_id": "m2", "member_id": "K1", "claim_start_date": "2024-02-10"},
        # A reversal nets out.
        {
            "claim_id": "m3",
            "member_id": "K2",
            "claim_start_date": "2024-02-11",
            "coinsurance_amount": "7.50",
            "claim_version": 1,
        },
        {
            "claim_id": "m3",
            "member_id": "K2",
            "claim_start_date": "2024-02-11",
            "coinsurance_amount": "-7.50",
            "claim_version": 2,
            "claim_status": "reversed",
        },
        {
            "claim_id": "m4",
            "member_id": "K2",
            "claim_start_date": "2024-03-11",
            "coinsurance_amount": "3.25",
        },
        # Outside enrollment (K3 enrolled from April).
        {
            "claim_id": "m5",
            "member_id": "K3",
            "claim_start_date": "2024-03-11",
            "copay_amount": "99.00",
        },
    ]
    fills: list[dict[str, object]] = [
        {
            "claim_id": "r1",
            "member_id": "K1",
            "fill_date": "2024-03-01",
            "member_paid_amount": "5.00",
        },
        {
            "claim_id": "r2",
            "member_id": "K2",
            "fill_date": "2024-03-02",
            "member_paid_amount": None,
        },
    ]
    people: list[dict[str, object]] = [
        {"member_id": "K1"},
        {"member_id": "K2"},
        {"member_id": "K3", "enrollment_start_date": "2024-04-01"},
    ]
    out = _one("cost.member_cost_share_pmpm", _carrier(people, lines, fills), Q1)
    assert _records(out) == [
        {
            "member_months": 6,
            "members": 2,
            "claimants": 2,
            "cost_share_cents": 1000 + 2000 + 325 + 500,
            "deductible_cents": 1000,
            "coinsurance_cents": 325,
            "copay_cents": 2000,
            "pharmacy_member_paid_cents": 500,
        },
    ]


def _spenders() -> dict[str, pd.DataFrame]:
    people: list[dict[str, object]] = [
        {"member_id": "H1"},
        {"member_id": "H2"},
        {"member_id": "H3"},
        {"member_id": "H4"},
        {"member_id": "H5"},
        {"member_id": "H6", "sex": "M", "plan_code": "A1", "enrollment_end_date": "2024-01-31"},
        {
            "member_id": "H6",
            "sex": "M",
            "plan_code": "B2",
            "enrollment_start_date": "2024-02-01",
            "enrollment_end_date": "2024-02-29",
        },
    ]
    lines: list[dict[str, object]] = [
        # H1: exactly $50,000 in two months.
        {
            "claim_id": "h1",
            "member_id": "H1",
            "claim_start_date": "2024-01-05",
            "allowed_amount": "30000.00",
        },
        {
            "claim_id": "h2",
            "member_id": "H1",
            "claim_start_date": "2024-03-05",
            "allowed_amount": "20000.00",
        },
        # H2: one cent short of $50,000.
        {
            "claim_id": "h3",
            "member_id": "H2",
            "claim_start_date": "2024-02-05",
            "allowed_amount": "49999.99",
        },
        # H3: nothing. H4: a reversal of a claim paid before the period: -$10.
        {
            "claim_id": "h4",
            "member_id": "H4",
            "claim_start_date": "2024-01-05",
            "claim_status": "reversed",
            "allowed_amount": "-10.00",
            "paid_amount": "-5.00",
        },
        # H5: exactly $1M, one dollar of it a fill.
        {
            "claim_id": "h5",
            "member_id": "H5",
            "claim_start_date": "2024-02-05",
            "allowed_amount": "999999.00",
        },
        # H6: $250,000.00 over January (plan A1) and February (plan B2); its cell is B2's.
        {
            "claim_id": "h6",
            "member_id": "H6",
            "claim_start_date": "2024-01-05",
            "allowed_amount": "200000.00",
        },
        {
            "claim_id": "h7",
            "member_id": "H6",
            "claim_start_date": "2024-02-05",
            "allowed_amount": "50000.00",
        },
        # Outside enrollment: not counted.
        {
            "claim_id": "h8",
            "member_id": "H6",
            "claim_start_date": "2024-03-05",
            "allowed_amount": "70000.00",
        },
    ]
    fills: list[dict[str, object]] = [
        {"claim_id": "f1", "member_id": "H5", "fill_date": "2024-03-01", "allowed_amount": "1.00"}
    ]
    return _carrier(people, lines, fills)


def test_distribution_histogram_bins_of_period_totals() -> None:
    out = _one("cost.distribution", _spenders(), Q1)
    assert list(out.columns) == ["members", "allowed_cents", "allowed_histogram"]
    (row,) = _records(out)
    total = 5_000_000 + 4_999_999 + 0 - 1000 + 100_000_000 + 25_000_000
    assert row["members"] == 6 and row["allowed_cents"] == total
    histogram = row["allowed_histogram"]
    assert isinstance(histogram, Histogram)
    # Edges ceil(100 · 10^(k/10)) cents: $50,000 is past edge 46 (3,981,072) and short of
    # edge 47 (5,011,873), so bin 47, as is $49,999.99; $250,000 is past edge 53 (19,952,624)
    # and short of edge 54 (25,118,865): bin 54; $1M is edge 60 exactly: bin 61. H3's zero and
    # H4's -$10 are in bin 0.
    expected_counts = [0] * N_BINS
    expected_cents = [0] * N_BINS
    for b, count, cents in (
        (0, 2, -1000),
        (47, 2, 9_999_999),
        (54, 1, 25_000_000),
        (61, 1, 100_000_000),
    ):
        expected_counts[b], expected_cents[b] = count, cents
    assert histogram == Histogram(tuple(expected_counts), tuple(expected_cents))
    assert [bin_index(c) for c in (0, -1000, 4_999_999, 5_000_000, 25_000_000, 100_000_000)] == [
        0,
        0,
        47,
        47,
        54,
        61,
    ]
    by_plan = _one("cost.distribution", _spenders(), Q1, [D.PLAN_CODE, D.SEX])
    b2 = by_plan[by_plan["plan_code"] == "B2"]
    assert b2[["sex", "members", "allowed_cents"]].values.tolist() == [["M", 1, 25_000_000]]


def test_high_cost_claimant_thresholds_are_inclusive() -> None:
    (row,) = _records(_one("cost.high_cost_claimants", _spenders(), Q1))
    assert row == {
        "members": 6,
        "allowed_cents": 134_998_999,
        "hcc_50k": 3,
        "hcc_50k_allowed_cents": 5_000_000 + 100_000_000 + 25_000_000,
        "hcc_100k": 2,
        "hcc_100k_allowed_cents": 125_000_000,
        "hcc_250k": 2,
        "hcc_250k_allowed_cents": 125_000_000,
        "hcc_1m": 1,
        "hcc_1m_allowed_cents": 100_000_000,
    }
    filtered = _one("cost.high_cost_claimants", _spenders(), Q1, filters={D.PLAN_CODE: ["A1"]})
    assert int(filtered["members"].iloc[0]) == 5
    assert int(filtered["hcc_250k"].iloc[0]) == 1


def test_out_of_network_share_of_known_network_allowed() -> None:
    lines: list[dict[str, object]] = [
        {
            "claim_id": "n1",
            "member_id": "W1",
            "claim_start_date": "2024-01-05",
            "in_network": "false",
            "allowed_amount": "100.00",
        },
        {
            "claim_id": "n2",
            "member_id": "W1",
            "claim_start_date": "2024-01-06",
            "in_network": "true",
            "allowed_amount": "300.00",
        },
        {
            "claim_id": "n3",
            "member_id": "W2",
            "claim_start_date": "2024-01-07",
            "in_network": None,
            "allowed_amount": "50.00",
        },
        {
            "claim_id": "n4",
            "member_id": "W1",
            "claim_start_date": "2024-02-05",
            "in_network": "false",
            "allowed_amount": "25.00",
            "claim_version": 1,
        },
        {
            "claim_id": "n4",
            "member_id": "W1",
            "claim_start_date": "2024-02-05",
            "in_network": "false",
            "allowed_amount": "-25.00",
            "claim_version": 2,
            "claim_status": "reversed",
        },
    ]
    out = _one(
        "cost.out_of_network_share", _carrier([{"member_id": "W1"}, {"member_id": "W2"}], lines), Q1
    )
    assert _records(out) == [
        {
            "claimants": 2,
            "out_of_network_allowed_cents": 10000,
            "known_network_allowed_cents": 40000,
        }
    ]


# --- pharmacy --------------------------------------------------------------------------------


def _pharmacy_carrier() -> dict[str, pd.DataFrame]:
    people: list[dict[str, object]] = [
        {"member_id": "Q1"},
        {"member_id": "Q2"},
        {"member_id": "Q3", "enrollment_end_date": "2024-01-31"},
    ]
    fills: list[dict[str, object]] = [
        {
            "claim_id": "g1",
            "member_id": "Q1",
            "fill_date": "2024-01-05",
            "drug_class": "statin",
            "generic": "true",
            "days_supply": 30,
            "allowed_amount": "12.00",
        },
        {
            "claim_id": "g2",
            "member_id": "Q1",
            "fill_date": "2024-02-05",
            "drug_class": "statin",
            "generic": "false",
            "days_supply": 90,
            "allowed_amount": "150.00",
        },
        # Paid then reversed: not a fill; dollars net to zero.
        {
            "claim_id": "g3",
            "member_id": "Q2",
            "fill_date": "2024-02-06",
            "drug_class": "antidiabetic",
            "allowed_amount": "80.00",
        },
        {
            "claim_id": "g3",
            "member_id": "Q2",
            "fill_date": "2024-02-06",
            "drug_class": "antidiabetic",
            "claim_status": "reversed",
            "allowed_amount": "-80.00",
            "paid_amount": "-8.00",
        },
        # Denied: not a fill.
        {
            "claim_id": "g4",
            "member_id": "Q2",
            "fill_date": "2024-03-06",
            "generic": "false",
            "claim_status": "denied",
            "allowed_amount": "0.00",
            "paid_amount": "0.00",
        },
        # No drug class: unknown.
        {
            "claim_id": "g5",
            "member_id": "Q2",
            "fill_date": "2024-03-07",
            "drug_class": None,
            "days_supply": 60,
            "allowed_amount": "5.00",
        },
        # Outside enrollment.
        {"claim_id": "g6", "member_id": "Q3", "fill_date": "2024-02-07", "drug_class": "statin"},
    ]
    return _carrier(people, fills=fills)


def test_scripts_and_generic_dispensing_count_final_action_fills() -> None:
    tables = _pharmacy_carrier()
    scripts = _one("util.scripts", tables, Q1)
    assert _records(scripts) == [
        {"member_months": 7, "members": 3, "fill_members": 2, "fills": 3, "days_supply": 180}
    ]
    generic = _one("rx.generic_dispensing_rate", tables, Q1, [D.DRUG_CLASS])
    assert _records(generic) == [
        {"drug_class": "statin", "fill_members": 1, "fills": 2, "generic_fills": 1},
        {"drug_class": "unknown", "fill_members": 1, "fills": 1, "generic_fills": 1},
    ]


def test_spend_by_class_counts_every_row_in_dollars_and_final_action_fills() -> None:
    out = _one("rx.spend_by_class", _pharmacy_carrier(), Q1, [D.DRUG_CLASS])
    assert _records(out) == [
        {
            "drug_class": "antidiabetic",
            "fill_members": 1,
            "allowed_cents": 0,
            "paid_cents": 0,
            "fills": 0,
        },
        {"drug_class": "other", "fill_members": 1, "allowed_cents": 0, "paid_cents": 0, "fills": 0},
        {
            "drug_class": "statin",
            "fill_members": 1,
            "allowed_cents": 16200,
            "paid_cents": 1600,
            "fills": 2,
        },
        {
            "drug_class": "unknown",
            "fill_members": 1,
            "allowed_cents": 500,
            "paid_cents": 800,
            "fills": 1,
        },
    ]


def test_specialty_share_by_flag_or_cost_per_30_days() -> None:
    fills: list[dict[str, object]] = [
        {
            "claim_id": "x1",
            "member_id": "P1",
            "fill_date": "2024-01-05",
            "specialty": "true",
            "allowed_amount": "1000.00",
        },
        {
            "claim_id": "x2",
            "member_id": "P2",
            "fill_date": "2024-01-05",
            "allowed_amount": "600.00",
        },  # $600 per 30 days
        {
            "claim_id": "x3",
            "member_id": "P2",
            "fill_date": "2024-01-05",
            "days_supply": 90,
            "allowed_amount": "1200.00",
        },  # $400 per 30 days
        {
            "claim_id": "x4",
            "member_id": "P3",
            "fill_date": "2024-01-05",
            "allowed_amount": "900.00",
        },
        {
            "claim_id": "x4",
            "member_id": "P3",
            "fill_date": "2024-01-05",
            "claim_status": "reversed",
            "allowed_amount": "-900.00",
        },  # nets to $0
        {
            "claim_id": "x5",
            "member_id": "P3",
            "fill_date": "2024-01-05",
            "days_supply": 0,
            "allowed_amount": "5000.00",
        },  # no days: by its flag only
    ]
    tables = _carrier([{"member_id": m} for m in ("P1", "P2", "P3")], fills=fills)
    base = {"fill_members": 3, "pharmacy_allowed_cents": 780000}
    flag = _one("rx.specialty_share", tables, Q1)
    assert _records(flag) == [{**base, "specialty_members": 1, "specialty_allowed_cents": 100000}]
    at_500 = _one("rx.specialty_share", tables, Q1, parameters={"cost_per_30_days": 500})
    assert _records(at_500) == [{**base, "specialty_members": 2, "specialty_allowed_cents": 160000}]
    at_400 = _one("rx.specialty_share", tables, Q1, parameters={"cost_per_30_days": 400.0})
    assert _records(at_400) == [{**base, "specialty_members": 2, "specialty_allowed_cents": 280000}]
    just_above = _one("rx.specialty_share", tables, Q1, parameters={"cost_per_30_days": 400.01})
    assert int(just_above["specialty_allowed_cents"].iloc[0]) == 160000
    with pytest.raises(ValueError):
        compute("rx.specialty_share", {"c": tables}, Q1, [], parameters={"nope": 1.0})


def test_rebate_share_by_quarter() -> None:
    fills: list[dict[str, object]] = [
        {
            "claim_id": "b1",
            "member_id": "R1",
            "fill_date": "2024-01-10",
            "drug_class": "statin",
            "allowed_amount": "99.00",
        },  # before the period
        {
            "claim_id": "b2",
            "member_id": "R1",
            "fill_date": "2024-02-10",
            "drug_class": "statin",
            "allowed_amount": "10.00",
        },
        {
            "claim_id": "b3",
            "member_id": "R2",
            "fill_date": "2024-03-10",
            "drug_class": "antidiabetic",
            "allowed_amount": "40.00",
        },
        {
            "claim_id": "b4",
            "member_id": "R1",
            "fill_date": "2024-04-10",
            "drug_class": "statin",
            "allowed_amount": "20.00",
        },
        {
            "claim_id": "b5",
            "member_id": "R2",
            "fill_date": "2024-04-11",
            "drug_class": None,
            "allowed_amount": "7.00",
        },
    ]
    tables = _carrier([{"member_id": "R1"}, {"member_id": "R2"}], fills=fills)
    tables["rebates"] = pd.DataFrame(
        [
            ("2024Q1", "statin", None, "100.00"),
            ("2024Q1", "antidiabetic", None, "50.00"),
            ("2024Q2", "statin", None, "30.00"),
            ("2023Q4", "statin", None, "999.00"),
            ("2024Q2", None, "12345678901", "20.00"),
            ("2024-Q2", "statin", None, "5.00"),
            ("2024Q1", "antidepressant", None, "77.00"),  # a class nobody filled
        ],
        columns=["quarter", "drug_class", "ndc", "rebate_amount"],
    )
    period = Period.parse("2024-02:2024-04")  # touches 2024Q1 and 2024Q2
    by_quarter = _one("rx.rebate_share", tables, period, [D.QUARTER])
    assert _records(by_quarter) == [
        {
            "quarter": "2024Q1",
            "fill_members": 2,
            "pharmacy_allowed_cents": 5000,
            "rebate_cents": 15000 + 7700,
        },
        {
            "quarter": "2024Q2",
            "fill_members": 2,
            "pharmacy_allowed_cents": 2700,
            "rebate_cents": 5500,
        },
    ]
    by_class = _one("rx.rebate_share", tables, period, [D.QUARTER, D.DRUG_CLASS])
    assert _records(by_class) == [
        {
            "quarter": "2024Q1",
            "drug_class": "antidepressant",
            "fill_members": 0,
            "pharmacy_allowed_cents": 0,
            "rebate_cents": 7700,
        },  # rebated, nobody filled
        {
            "quarter": "2024Q1",
            "drug_class": "antidiabetic",
            "fill_members": 1,
            "pharmacy_allowed_cents": 4000,
            "rebate_cents": 5000,
        },
        {
            "quarter": "2024Q1",
            "drug_class": "statin",
            "fill_members": 1,
            "pharmacy_allowed_cents": 1000,
            "rebate_cents": 10000,
        },
        {
            "quarter": "2024Q2",
            "drug_class": "statin",
            "fill_members": 1,
            "pharmacy_allowed_cents": 2000,
            "rebate_cents": 3500,
        },
        {
            "quarter": "2024Q2",
            "drug_class": "unknown",
            "fill_members": 1,
            "pharmacy_allowed_cents": 700,
            "rebate_cents": 2000,
        },
    ]
    # A carrier without a rebates table has no rebates; the program adds both carriers.
    both = compute(
        "rx.rebate_share",
        {
            "c": tables,
            "d": _carrier(
                [{"member_id": "R1"}],
                fills=[{"claim_id": "z", "member_id": "R1", "fill_date": "2024-02-01"}],
            ),
        },
        period,
        [D.YEAR],
    )
    assert _records(both) == [
        {
            "scope": "c",
            "year": "2024",
            "fill_members": 2,
            "pharmacy_allowed_cents": 7700,
            "rebate_cents": 28200,
        },
        {
            "scope": "d",
            "year": "2024",
            "fill_members": 1,
            "pharmacy_allowed_cents": 1000,
            "rebate_cents": 0,
        },
        {
            "scope": "program",
            "year": "2024",
            "fill_members": 3,
            "pharmacy_allowed_cents": 8700,
            "rebate_cents": 28200,
        },
    ]


# --- quality measures ------------------------------------------------------------------------


def test_breast_cancer_screening_look_back_of_27_months() -> None:
    people: list[dict[str, object]] = [
        {"member_id": "W1", "birth_date": "1960-06-15"},
        {"member_id": "W2", "birth_date": "1969-06-15"},
        {"member_id": "W3", "birth_date": "1974-12-31"},  # 50 on the period's last day
        {"member_id": "W4", "birth_date": "1964-06-15", "enrollment_end_date": "2024-03-31"},
        {"member_id": "W4", "birth_date": "1964-06-15", "enrollment_start_date": "2024-05-01"},
        {"member_id": "W5", "birth_date": "1950-01-01"},  # 74
        {"member_id": "W6", "birth_date": "1964-06-15", "sex": "M"},
        {"member_id": "W7", "birth_date": "1975-01-01"},  # 49
        {"member_id": "W8", "birth_date": "1972-06-15", "enrollment_start_date": "2024-01-15"},
        # 64 on 1 December (band 45-64), 65 on 31 December: eligible, in band 45-64.
        {"member_id": "W9", "birth_date": "1959-12-15"},
    ]
    lines: list[dict[str, object]] = [
        {
            "claim_id": "s1",
            "member_id": "W1",
            "hcpcs": "77067",
            "claim_start_date": "2022-10-01",
        },  # first day of the window
        {
            "claim_id": "s2",
            "member_id": "W2",
            "hcpcs": "77067",
            "claim_start_date": "2022-09-30",
        },  # a day early
        {
            "claim_id": "s3",
            "member_id": "W3",
            "hcpcs": "77064",
            "claim_start_date": "2024-05-01",
        },  # not a mammogram code
        {
            "claim_id": "s4",
            "member_id": "W4",
            "hcpcs": "77065",
            "claim_start_date": "2024-06-01",
        },  # W4 missed April
        {
            "claim_id": "s5",
            "member_id": "W5",
            "hcpcs": "77061",
            "claim_start_date": "2024-11-01",
            "claim_status": "denied",
        },
        {"claim_id": "s6", "member_id": "W6", "hcpcs": "77066", "claim_start_date": "2024-06-01"},
        {"claim_id": "s7", "member_id": "W7", "hcpcs": "77066", "claim_start_date": "2024-06-01"},
        {
            "claim_id": "s8",
            "member_id": "W8",
            "hcpcs": "77062",
            "claim_start_date": "2023-01-05",
        },  # before her enrollment: still counts
        {
            "claim_id": "s9",
            "member_id": "W9",
            "hcpcs": "77063",
            "claim_start_date": "2024-12-31",
        },  # the window's last day
        {
            "claim_id": "s10",
            "member_id": "W2",
            "hcpcs": "77067",
            "claim_start_date": "2025-01-02",
        },  # after the period
    ]
    out = _one(
        "quality.breast_cancer_screening",
        _carrier(people, lines),
        Period.parse("2024"),
        [D.AGE_BAND],
    )
    assert _records(out) == [
        {"age_band": "45-64", "eligible": 5, "screened": 3},  # W1 W2 W3 W8 W9
        {"age_band": "65+", "eligible": 1, "screened": 0},  # W5
    ]


def test_diabetes_two_outpatient_dates_or_one_inpatient_line() -> None:
    def dx(
        claim: str, member: str, day: str, code: str = "E119", **more: object
    ) -> dict[str, object]:
        return {
            "claim_id": claim,
            "member_id": member,
            "claim_start_date": day,
            "dx2": code,
            **more,
        }

    def test(
        claim: str, member: str, day: str, code: str = "83036", **more: object
    ) -> dict[str, object]:
        return {
            "claim_id": claim,
            "member_id": member,
            "claim_start_date": day,
            "hcpcs": code,
            **more,
        }

    inpatient = {"claim_type": "institutional", "bill_type": "111"}
    people: list[dict[str, object]] = [
        {"member_id": f"Y{i}"} for i in range(1, 11) if i not in (7, 8)
    ]
    people += [
        {"member_id": "Y7", "birth_date": "1948-01-01"},  # 76
        {"member_id": "Y8", "birth_date": "2006-03-31"},  # 18 on 31 March
    ]
    lines: list[dict[str, object]] = [
        dx("d1", "Y1", "2024-01-05"),
        dx("d2", "Y1", "2024-02-07", "E1165"),
        test("t1", "Y1", "2024-03-01"),
        # Two claims on one day: one date.
        dx("d3", "Y2", "2024-01-05"),
        dx("d4", "Y2", "2024-01-05"),
        dx("d5", "Y3", "2024-02-01", "E110", **inpatient),
        dx("d6", "Y4", "2024-02-01"),
        test("t4", "Y4", "2024-02-01"),
        dx("d7", "Y5", "2024-01-05"),
        dx("d8", "Y5", "2024-02-05", claim_version=1),
        dx("d8", "Y5", "2024-02-05", claim_version=2, claim_status="reversed"),
        dx("d9", "Y6", "2024-01-05", "E139"),
        dx("d10", "Y6", "2024-02-05", "E139"),
        dx("d11", "Y7", "2024-01-05", "E109", **inpatient),
        dx("d12", "Y8", "2024-01-05", "E1010", **inpatient),
        test("t8", "Y8", "2023-12-20", "83037"),  # before the period
        dx("d13", "Y9", "2023-12-20"),
        dx("d14", "Y9", "2024-01-10"),
        dx("d15", "Y10", "2024-01-10", claim_type="institutional", bill_type="131"),
        dx("d16", "Y10", "2024-03-10", claim_type="institutional", bill_type="131"),
        test("t10", "Y10", "2024-03-10", "83037", claim_status="denied"),
    ]
    out = _one("quality.diabetes_hba1c_testing", _carrier(people, lines), Q1)
    assert _records(out) == [{"eligible": 4, "tested": 1}]  # Y1 Y3 Y8 Y10; Y1


def test_statin_use_for_members_with_two_antidiabetic_fills() -> None:
    def fill(
        claim: str, member: str, day: str, drug: str = "antidiabetic", **more: object
    ) -> dict[str, object]:
        return {
            "claim_id": claim,
            "member_id": member,
            "fill_date": day,
            "drug_class": drug,
            **more,
        }

    people: list[dict[str, object]] = [
        {"member_id": "S1", "birth_date": "1974-01-01"},
        {"member_id": "S2", "birth_date": "1974-01-01"},
        {"member_id": "S3", "birth_date": "1984-06-01"},  # 39
        {"member_id": "S4", "birth_date": "1948-12-31"},  # 75
        {"member_id": "S5", "birth_date": "1964-01-01"},
        {"member_id": "S6", "birth_date": "1964-01-01", "enrollment_end_date": "2024-02-29"},
    ]
    fills: list[dict[str, object]] = [
        fill("a1", "S1", "2024-01-02"),
        fill("a2", "S1", "2024-02-02"),
        fill("a3", "S1", "2024-03-02", "statin"),
        fill("b1", "S2", "2024-01-02"),
        fill("b2", "S2", "2024-02-02"),
        fill("b2", "S2", "2024-02-02", claim_status="reversed"),
        fill("b3", "S2", "2024-03-02", "statin"),
        fill("c1", "S3", "2024-01-02"),
        fill("c2", "S3", "2024-02-02"),
        fill("c3", "S3", "2024-03-02", "statin"),
        fill("d1", "S4", "2024-01-02"),
        fill("d2", "S4", "2024-01-03"),
        fill("d3", "S4", "2024-03-02", "statin", claim_status="denied"),
        fill("e1", "S5", "2024-01-02"),
        fill("e2", "S5", "2024-02-02"),
        fill("e3", "S5", "2023-12-28", "statin"),
        fill("f1", "S6", "2024-01-02"),
        fill("f2", "S6", "2024-02-02"),
        fill("f3", "S6", "2024-02-03", "statin"),
    ]
    out = _one("quality.statin_use_diabetes", _carrier(people, fills=fills), Q1, [D.AGE_BAND])
    assert _records(out) == [
        {"age_band": "45-64", "eligible": 2, "on_statin": 1},  # S1, S5
        {"age_band": "65+", "eligible": 1, "on_statin": 0},  # S4
    ]


# --- operations ------------------------------------------------------------------------------


def test_claims_lag_buckets_from_0_to_12_and_more() -> None:
    def paid(
        claim: str, day: str, paid_on: str | None, dollars: str, **more: object
    ) -> dict[str, object]:
        return {
            "claim_id": claim,
            "member_id": "L1",
            "claim_start_date": day,
            "paid_date": paid_on,
            "paid_amount": dollars,
            **more,
        }

    lines: list[dict[str, object]] = [
        paid("l1", "2024-01-10", "2024-01-20", "100.00"),
        paid("l2", "2024-01-15", "2024-02-02", "200.00", claim_version=1),
        paid("l2", "2024-01-15", "2024-03-03", "-200.00", claim_version=2, claim_status="reversed"),
        paid("l3", "2024-02-01", "2025-02-01", "50.00"),  # 12 months
        paid("l4", "2024-01-05", "2025-06-01", "70.00"),  # 17 months: the 12+ bucket
        paid("l5", "2024-03-01", "2025-02-28", "30.00"),  # 11 months
        paid("l6", "2024-01-03", None, "0.00", claim_status="denied"),
        paid("l7", "2024-01-08", "2023-12-31", "40.00"),  # paid before incurred: no bucket
        {
            "claim_id": "l8",
            "member_id": "L2",
            "claim_start_date": "2024-01-08",
            "paid_date": "2024-01-09",
            "paid_amount": "40.00",
        },  # L2 is not enrolled
    ]
    tables = _carrier([{"member_id": "L1"}], lines)
    out = _one("ops.claims_lag", tables, Q1, [D.MONTH])
    zero = {f"paid_lag_{k:02d}_cents": 0 for k in range(13)}
    assert _records(out) == [
        {
            "month": "2024-01",
            "claimants": 1,
            **zero,
            "paid_lag_00_cents": 10000,
            "paid_lag_01_cents": 20000,
            "paid_lag_02_cents": -20000,
            "paid_lag_12_cents": 7000,
        },
        {"month": "2024-02", "claimants": 1, **zero, "paid_lag_12_cents": 5000},
        {"month": "2024-03", "claimants": 1, **zero, "paid_lag_11_cents": 3000},
    ]


def test_denial_rate_over_the_final_rows_of_adjudicated_lines() -> None:
    def line(claim: str, status: str, charge: str, **more: object) -> dict[str, object]:
        return {
            "claim_id": claim,
            "member_id": "Z1",
            "claim_start_date": "2024-02-01",
            "claim_status": status,
            "charge_amount": charge,
            **more,
        }

    lines: list[dict[str, object]] = [
        line("a", "paid", "100.00"),
        line("b", "denied", "200.00"),
        line("c", "denied", "300.00", claim_version=1),  # reprocessed and paid
        line("c", "paid", "300.00", claim_version=2),
        line("d", "paid", "400.00", claim_version=1),  # reversed: not adjudicated
        line("d", "reversed", "-400.00", claim_version=2),
        line("e", "paid", "50.00", claim_version=1),
        line("e", "reversed", "-50.00", claim_version=2),
        line("e", "adjusted", "60.00", claim_version=3),
        line("f", "denied", "40.00", claim_line=1),
        line("f", "paid", "10.00", claim_line=2),
        # Outside enrollment.
        {
            "claim_id": "g",
            "member_id": "Z2",
            "claim_start_date": "2024-02-01",
            "claim_status": "denied",
        },
    ]
    out = _one("ops.denial_rate", _carrier([{"member_id": "Z1"}], lines), Q1)
    assert _records(out) == [
        {
            "claimants": 1,
            "lines": 6,
            "denied_lines": 2,
            "charge_cents": 71000,
            "denied_charge_cents": 24000,
        }
    ]


def test_data_quality_counts_rows_outside_enrollment_and_invalid_codes() -> None:
    people: list[dict[str, object]] = [{"member_id": "V1", "enrollment_end_date": "2024-01-31"}]
    lines: list[dict[str, object]] = [
        {
            "claim_id": "v1",
            "member_id": "V1",
            "claim_start_date": "2024-01-05",
            "place_of_service": "11",
        },
        {
            "claim_id": "v2",
            "member_id": "V1",
            "claim_start_date": "2024-01-06",
            "place_of_service": "27",
        },  # not a place of service
        {
            "claim_id": "v3",
            "member_id": "V1",
            "claim_start_date": "2024-01-07",
            "claim_type": "institutional",
            "bill_type": None,
            "revenue_code": "9999",
            "drg": "000",
        },  # missing bill type, unknown revenue code and DRG
        {
            "claim_id": "v4",
            "member_id": "V1",
            "claim_start_date": "2024-01-08",
            "claim_type": "institutional",
            "bill_type": "111",
            "revenue_code": "0450",
            "drg": "470",
        },
        {
            "claim_id": "v5",
            "member_id": "V1",
            "claim_start_date": "2024-02-08",
            "place_of_service": None,
        },  # outside enrollment and missing its place of service
        {
            "claim_id": "v6",
            "member_id": "V9",
            "claim_start_date": "2024-03-08",
            "place_of_service": "11",
        },  # a member the eligibility does not know
        {
            "claim_id": "v7",
            "member_id": "V1",
            "claim_start_date": "2023-12-08",
            "place_of_service": "00",
        },  # before the period
    ]
    fills: list[dict[str, object]] = [
        {"claim_id": "p1", "member_id": "V1", "fill_date": "2024-01-09"},
        {"claim_id": "p2", "member_id": "V1", "fill_date": "2024-03-09"},
    ]
    out = _one("ops.data_quality", _carrier(people, lines, fills), Q1, [D.MONTH])
    counts = (
        "medical_rows",
        "pharmacy_rows",
        "medical_outside_enrollment",
        "pharmacy_outside_enrollment",
        "invalid_place_of_service",
        "invalid_revenue_code",
        "invalid_drg",
        "missing_fields",
    )
    assert [(r["month"], r["claimants"], *(r[c] for c in counts)) for r in _records(out)] == [
        ("2024-01", 1, 4, 1, 0, 0, 1, 1, 1, 1),
        ("2024-02", 1, 1, 0, 1, 0, 0, 0, 0, 1),
        ("2024-03", 2, 1, 1, 1, 1, 0, 0, 0, 0),
    ]


def test_every_metric_runs_on_a_carrier_without_rows() -> None:
    empty = _carrier([])
    for name, spec in METRICS.items():
        group_by = sorted(spec.one_of)[:1]
        out = compute(name, {"c": empty}, Q1, group_by)
        assert out.empty, name
        statistics = [s.name for s in spec.statistics]
        assert list(out.columns) == ["scope", *(d.value for d in group_by), *statistics]
