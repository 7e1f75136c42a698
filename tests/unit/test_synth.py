"""The synthetic carrier generator: reproducible bytes, the schema, calibration, edge cases."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fedoversight.codelists import (
    CodeCondition,
    ServiceCategoryRule,
    drg_types,
    place_of_service_codes,
    revenue_codes,
    service_category_rules,
)
from fedoversight.errors import ConfigError
from fedoversight.schema import TABLES, ColumnType
from oversight_sim.synth import (
    SynthConfig,
    arrow_schema,
    calibration_report,
    carrier_ids,
    carrier_rng,
    carrier_sizes,
    generate,
    generate_carrier,
    read_carrier,
    write_carriers,
)

SMALL = SynthConfig(carriers=4, members=1_200, seed=11)
MAMMOGRAM = {"77061", "77062", "77063", "77065", "77066", "77067"}
ED_REVENUE = {"0450", "0451", "0452", "0459", "0981"}
DRUG_CLASSES = {
    "antidiabetic",
    "statin",
    "antihypertensive",
    "antidepressant",
    "specialty biologic",
    "opioid analgesic",
    "antibiotic",
    "other",
}


@pytest.fixture(scope="module")
def carrier() -> dict[str, pd.DataFrame]:
    """One 20,000-member carrier over twelve months (the calibration size)."""
    config = SynthConfig(carriers=1, members=20_000, seed=7)
    return generate_carrier("c001", 20_000, config, carrier_rng(config, 1))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The small configuration written twice as Parquet and twice as CSV."""
    out: dict[str, list[Path]] = {}
    for fmt in ("parquet", "csv"):
        config = SynthConfig(
            carriers=SMALL.carriers, members=SMALL.members, seed=SMALL.seed, file_format=fmt
        )
        out[fmt] = [
            Path(write_carriers(tmp_path_factory.mktemp(f"{fmt}{run}"), config)[0]).parent
            for run in range(2)
        ]
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _distinct(frame: pd.DataFrame, column: str) -> set[str]:
    return set(frame[column].dropna().unique())


def _matches(frame: pd.DataFrame, column: str, pattern: str) -> np.ndarray:
    found = pc.match_substring_regex(pa.array(frame[column]), pattern).fill_null(False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _cents(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pa.array(frame[column]).cast(pa.float64()).fill_null(0.0).to_numpy()
    return np.round(np.asarray(values) * 100).astype(np.int64)


def _dates(frame: pd.DataFrame, column: str) -> pd.Series:
    stamps = pa.array(frame[column]).cast(pa.timestamp("ms"))
    return pd.Series(stamps.to_numpy(zero_copy_only=False), index=frame.index)


# --- reproducibility and files ------------------------------------------------------------


def test_same_seed_same_bytes(written: dict[str, list[Path]]) -> None:
    for fmt, (first, second) in written.items():
        a, b = _files(first), _files(second)
        assert a.keys() == b.keys()
        assert len(a) == SMALL.carriers * len(TABLES), fmt
        for name in a:
            assert a[name] == b[name], f"{fmt}: {name} differs between two runs"


def test_a_different_seed_gives_different_data(tmp_path: Path) -> None:
    config = SynthConfig(carriers=1, members=300, seed=12)
    other = write_carriers(tmp_path / "x", config)[0] / "medical_claims.parquet"
    config = SynthConfig(carriers=1, members=300, seed=13)
    again = write_carriers(tmp_path / "y", config)[0] / "medical_claims.parquet"
    assert other.read_bytes() != again.read_bytes()


def test_one_directory_per_carrier(written: dict[str, list[Path]]) -> None:
    root = written["parquet"][0]
    assert sorted(p.name for p in root.iterdir()) == carrier_ids(SMALL.carriers)
    for directory in root.iterdir():
        assert sorted(p.name for p in directory.iterdir()) == sorted(
            f"{t.name}.parquet" for t in TABLES
        )


def test_progress_is_reported(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    write_carriers(
        tmp_path,
        SynthConfig(carriers=3, members=90),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_written_carrier_equals_generated_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small blocks, so the carrier is made (and written) in three parts.
    monkeypatch.setattr(generate, "BLOCK_MEMBERS", 400)
    config = SynthConfig(carriers=1, members=1_000, seed=5)
    written = read_carrier(write_carriers(tmp_path, config)[0])
    frames = generate_carrier("c001", 1_000, config, carrier_rng(config, 1))
    for name in frames:
        pd.testing.assert_frame_equal(written[name], frames[name], check_exact=True)
    members = frames["eligibility"]["member_id"].drop_duplicates()
    assert len(members) == 1_000
    assert members.is_monotonic_increasing
    claims = frames["medical_claims"]
    assert not claims.duplicated(["claim_id", "claim_version", "claim_line"]).any()
    assert set(claims["member_id"]) <= set(members)
    assert frames["pharmacy_claims"]["claim_id"].str[5:].astype(int).max() == len(
        frames["pharmacy_claims"].drop_duplicates("claim_id")
    )


def test_parquet_files_have_the_schema_types(written: dict[str, list[Path]]) -> None:
    directory = written["parquet"][0] / "c002"
    for table in TABLES:
        schema = pq.read_schema(directory / f"{table.name}.parquet")
        assert schema.names == [c.name for c in table.columns]
        assert schema.equals(arrow_schema(table), check_metadata=False), table.name
        metadata = pq.read_metadata(directory / f"{table.name}.parquet")
        assert "time" not in str(metadata.metadata).lower()


def test_frames_have_the_schema_types(carrier: dict[str, pd.DataFrame]) -> None:
    expected = {
        ColumnType.CODE: pa.string(),
        ColumnType.DATE: pa.date32(),
        ColumnType.MONEY: pa.decimal128(18, 2),
        ColumnType.BOOL: pa.bool_(),
        ColumnType.INT: pa.int64(),
        ColumnType.NUMBER: pa.float64(),
    }
    for table in TABLES:
        frame = carrier[table.name]
        assert list(frame.columns) == [c.name for c in table.columns]
        for column in table.columns:
            assert frame[column.name].dtype == pd.ArrowDtype(expected[column.type]), (
                f"{table.name}.{column.name}"
            )
            if not column.nullable:
                assert frame[column.name].notna().all(), f"{table.name}.{column.name}"


def test_csv_round_trip_equals_parquet(written: dict[str, list[Path]]) -> None:
    parquet = read_carrier(written["parquet"][0] / "c001")
    text = read_carrier(written["csv"][0] / "c001")
    assert parquet.keys() == text.keys() == {t.name for t in TABLES}
    for name in parquet:
        pd.testing.assert_frame_equal(parquet[name], text[name], check_exact=True)


def test_csv_text_format(written: dict[str, list[Path]]) -> None:
    directory = written["csv"][0] / "c001"
    with (directory / "medical_claims.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    money = re.compile(r"-?\d+\.\d{2}")
    date = re.compile(r"\d{4}-\d{2}-\d{2}")
    assert all(money.fullmatch(r["allowed_amount"]) for r in rows)
    assert all(date.fullmatch(r["claim_start_date"]) for r in rows)
    assert {r["in_network"] for r in rows} == {"true", "false", ""}
    assert any(r["revenue_code"].startswith("0") and len(r["revenue_code"]) == 4 for r in rows)
    assert any(r["place_of_service"].startswith("0") for r in rows)
    assert all(r["admission_date"] == "" for r in rows if r["claim_type"] == "professional")
    with (directory / "pharmacy_claims.csv").open(newline="") as f:
        ndcs = [r["ndc"] for r in csv.DictReader(f)]
    assert all(re.fullmatch(r"\d{11}", n) for n in ndcs)
    assert any(n.startswith("0") for n in ndcs)


def test_codes_keep_their_form(carrier: dict[str, pd.DataFrame]) -> None:
    med = carrier["medical_claims"]
    forms = {
        "revenue_code": r"\d{4}",
        "place_of_service": r"\d{2}",
        "bill_type": r"\d{3}",
        "drg": r"\d{3}",
        "facility_npi": r"\d{10}",
        "rendering_npi": r"\d{10}",
        **{f"dx{i}": r"[A-Z][0-9][0-9A-Z]{1,5}" for i in range(1, 11)},
    }
    for column, form in forms.items():
        values = med[column].dropna().unique()
        assert len(values), column
        assert all(re.fullmatch(form, v) for v in values), column
    assert _distinct(med, "revenue_code") <= revenue_codes()
    assert _distinct(med, "place_of_service") <= place_of_service_codes()
    known = drg_types()
    assert all(known.get(d) in ("M", "P") for d in med["drg"].dropna().unique())
    for npi in med["rendering_npi"].dropna().unique()[:500]:
        assert _luhn_npi(npi)


def _luhn_npi(npi: str) -> bool:
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return total % 10 == 0


# --- carriers -----------------------------------------------------------------------------


def test_carrier_ids() -> None:
    assert carrier_ids(3) == ["c001", "c002", "c003"]
    assert carrier_ids(65)[-1] == "c065"


def test_carrier_sizes_are_skewed() -> None:
    rng = np.random.default_rng(1)
    small = carrier_sizes(20_000, 65, rng)
    assert small.sum() == 20_000 and len(small) == 65
    assert 0.68 <= small[0] / 20_000 <= 0.72
    assert small.min() >= 30
    assert small[1] > 3 * small[-1]
    full = carrier_sizes(8_200_000, 65, rng)
    assert full.sum() == 8_200_000
    assert 5_500_000 <= full[0] <= 5_900_000
    assert 2_000 <= full.min() <= 10_000
    with pytest.raises(ConfigError):
        carrier_sizes(100, 65, rng)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        SynthConfig(months=13)
    with pytest.raises(ConfigError):
        SynthConfig(carriers=65, members=1_000)


def test_ids_embed_the_carrier(written: dict[str, list[Path]]) -> None:
    root = written["parquet"][0]
    members: set[str] = set()
    for carrier_id in carrier_ids(SMALL.carriers):
        tables = read_carrier(root / carrier_id)
        ids = tables["eligibility"]["member_id"]
        assert ids.str.startswith(f"{carrier_id}M").all()
        claims = tables["medical_claims"]
        assert claims["claim_id"].str.startswith(f"{carrier_id}C").all()
        assert not (claims.groupby(["claim_id", "claim_version", "claim_line"]).size() > 1).any()
        fills = tables["pharmacy_claims"]
        assert not (fills.groupby(["claim_id", "claim_status"]).size() > 1).any()
        assert not members & set(ids)
        members |= set(ids)
        plans = tables["eligibility"]["plan_code"].unique()
        assert 1 <= len(plans) <= 4
        assert all(re.fullmatch(r"[A-Z0-9]{2,3}", p) for p in plans)


# --- eligibility --------------------------------------------------------------------------


def test_eligibility_edge_cases(carrier: dict[str, pd.DataFrame]) -> None:
    elig = carrier["eligibility"]
    start = _dates(elig, "enrollment_start_date")
    end = _dates(elig, "enrollment_end_date")
    year_start = pd.Timestamp("2026-01-01")
    # Plan switches: two adjacent spans with different plans.
    twice = elig[elig.duplicated("member_id", keep=False)].copy()
    assert twice["member_id"].nunique() >= 100
    first = twice.groupby("member_id").nth(0)
    second = twice.groupby("member_id").nth(1)
    gap = (
        _dates(second, "enrollment_start_date").to_numpy()
        - _dates(first, "enrollment_end_date").to_numpy()
    )
    assert (gap == np.timedelta64(1, "D")).all()
    assert (first["plan_code"].to_numpy() != second["plan_code"].to_numpy()).all()
    # Partial months, mid-year starts and terms, spans from before the year.
    assert ((start > year_start) & (start.dt.day != 1)).sum() > 200
    assert (end.notna() & (end < pd.Timestamp("2026-12-31"))).sum() > 500
    assert (start < year_start).mean() > 0.1
    # Deaths end enrollment.
    dead = elig[elig["death_date"].notna()].drop_duplicates("member_id", keep="last")
    assert len(dead) >= 20
    assert (dead["death_date"] == dead["enrollment_end_date"]).all()
    # Dependents point at a subscriber.
    assert set(elig["relationship"]) == {"self", "spouse", "child"}
    selves = set(elig.loc[elig["relationship"] == "self", "member_id"])
    assert set(elig["subscriber_id"]) <= selves
    assert set(elig["enrollee_type"]) == {"active", "annuitant", "survivor"}
    assert 0.8 <= (elig["program"] == "FEHB").mean() <= 0.9
    assert elig["state"].dropna().str.fullmatch(r"[A-Z]{2}").all()


def test_ages_cover_every_band(carrier: dict[str, pd.DataFrame]) -> None:
    elig = carrier["eligibility"].drop_duplicates("member_id")
    birth = _dates(elig, "birth_date")
    age_jan = (pd.Timestamp("2026-01-01") - birth).dt.days / 365.25
    age_dec = (pd.Timestamp("2026-12-31") - birth).dt.days / 365.25
    bands = pd.cut(age_jan, [-1, 18, 26, 45, 65, 200], right=False)
    assert (bands.value_counts() > 100).all()
    for edge in (18, 26, 45, 65):
        assert ((age_jan < edge) & (age_dec >= edge)).sum() > 10, edge
    medicare = elig["medicare_primary"].astype(bool)
    assert medicare[age_jan >= 65].mean() > 0.6
    assert medicare[age_jan < 65].mean() < 0.03


# --- medical claims -----------------------------------------------------------------------


def test_versions_and_statuses(carrier: dict[str, pd.DataFrame]) -> None:
    med = carrier["medical_claims"]
    allowed, paid = _cents(med, "allowed_amount"), _cents(med, "paid_amount")
    status = med["claim_status"].to_numpy()
    version = med["claim_version"].to_numpy()
    first = version == 1
    assert 0.04 <= (status[first] == "denied").mean() <= 0.07
    denied = status == "denied"
    assert (allowed[denied] == 0).all() and (paid[denied] == 0).all()
    assert med.loc[denied, "denial_reason"].notna().all()
    assert med.loc[~denied, "denial_reason"].isna().all()
    sums = pd.DataFrame(
        {
            "claim": med["claim_id"].astype(str),
            "allowed": allowed,
            "paid": paid,
            "version": version,
            "reversal": status == "reversed",
        }
    )
    per_claim = sums.groupby("claim").agg(
        allowed=("allowed", "sum"),
        paid=("paid", "sum"),
        top=("version", "max"),
        reversed=("reversal", "any"),
    )
    reversed_only = per_claim[per_claim["reversed"] & (per_claim["top"] == 2)]
    assert 0.01 <= len(reversed_only) / len(per_claim) <= 0.03
    assert (reversed_only["allowed"] == 0).all() and (reversed_only["paid"] == 0).all()
    reversal = status == "reversed"
    assert (allowed[reversal] <= 0).all() and (version[reversal] == 2).all()
    adjusted = per_claim[per_claim["top"] == 3]
    assert len(adjusted) > 100
    v3 = sums[sums["version"] == 3].groupby("claim")["allowed"].sum()
    assert (adjusted["allowed"] == v3.reindex(adjusted.index)).all()
    assert set(status) == {"paid", "denied", "reversed", "adjusted"}


def test_amounts_add_up(carrier: dict[str, pd.DataFrame]) -> None:
    med = carrier["medical_claims"]
    allowed, paid = _cents(med, "allowed_amount"), _cents(med, "paid_amount")
    share = sum(_cents(med, c) for c in ("deductible_amount", "coinsurance_amount", "copay_amount"))
    assert (allowed == paid + share).all()
    first = med["claim_version"].to_numpy() == 1
    charge = _cents(med, "charge_amount")
    assert (charge[first] >= allowed[first]).all()
    assert 0.75 <= paid.sum() / allowed.sum() <= 0.9
    assert (_cents(med, "deductible_amount") > 0).sum() > 1_000
    assert (_cents(med, "copay_amount") > 0).sum() > 1_000


def test_network_flags(carrier: dict[str, pd.DataFrame]) -> None:
    flags = carrier["medical_claims"]["in_network"]
    assert 0.03 <= (flags == False).mean() <= 0.15  # noqa: E712
    assert 0.004 <= flags.isna().mean() <= 0.02


def test_providers_cover_every_npi(carrier: dict[str, pd.DataFrame]) -> None:
    med, providers = carrier["medical_claims"], carrier["providers"]
    used = _distinct(med, "facility_npi") | _distinct(med, "rendering_npi")
    assert used == set(providers["npi"])
    assert providers["npi"].is_unique
    assert set(providers["entity_type"]) == {"1", "2"}
    assert providers["taxonomy"].str.fullmatch(r"[0-9A-Z]{9}X").all()
    institutional = med[med["claim_type"] == "institutional"]
    organisations = set(providers.loc[providers["entity_type"] == "2", "npi"])
    assert _distinct(institutional, "facility_npi") <= organisations


def test_nothing_is_dated_before_the_member_was_born(carrier: dict[str, pd.DataFrame]) -> None:
    """Items moved outside enrollment go before a newborn's enrollment, never before birth."""
    elig = carrier["eligibility"]
    born = (
        pd.Series(_dates(elig, "birth_date").to_numpy(), index=elig["member_id"].to_numpy())
        .groupby(level=0)
        .min()
    )
    newborns = born[born >= pd.Timestamp("2026-02-01")].index
    assert len(newborns) > 10, "newborns with a month before their birth to misdate into"
    for table, column in (("medical_claims", "claim_start_date"), ("pharmacy_claims", "fill_date")):
        frame = carrier[table]
        members = frame["member_id"].to_numpy()
        day = _dates(frame, column).to_numpy()
        assert not (day < born.reindex(members).to_numpy()).any(), table


def test_claims_outside_enrollment(carrier: dict[str, pd.DataFrame]) -> None:
    elig, med = carrier["eligibility"], carrier["medical_claims"]
    start = _dates(elig, "enrollment_start_date").clip(lower=pd.Timestamp("2026-01-01"))
    end = _dates(elig, "enrollment_end_date").fillna(pd.Timestamp("2026-12-31"))
    spans = pd.DataFrame(
        {
            "member_id": elig["member_id"].to_numpy(),
            "first": start.dt.month.to_numpy(),
            "last": end.dt.month.to_numpy(),
        }
    )
    months = spans.groupby("member_id").agg(first=("first", "min"), last=("last", "max"))
    where = pc.index_in(pa.array(med["member_id"]), value_set=pa.array(months.index))
    row = np.asarray(where.to_numpy(zero_copy_only=False))
    month = _dates(med, "claim_start_date").dt.month.to_numpy()
    outside = (month < months["first"].to_numpy()[row]) | (month > months["last"].to_numpy()[row])
    assert 0.002 <= outside.mean() <= 0.01


def _stays(med: pd.DataFrame) -> pd.DataFrame:
    facility = med[med["bill_type"].str.startswith("11", na=False) & (med["claim_version"] == 1)]
    return facility.drop_duplicates("claim_id")[
        [
            "claim_id",
            "member_id",
            "facility_npi",
            "admission_date",
            "discharge_date",
            "discharge_status",
            "drg",
            "bill_type",
        ]
    ]


def test_inpatient_stays(carrier: dict[str, pd.DataFrame]) -> None:
    med = carrier["medical_claims"]
    inpatient = med[med["bill_type"].str.startswith("11", na=False)]
    lines = inpatient.groupby("claim_id").size()
    assert (lines >= 3).mean() > 0.8
    assert inpatient["drg"].notna().all()
    stays = _stays(med)
    admit, discharge = _dates(stays, "admission_date"), _dates(stays, "discharge_date")
    assert 40 <= len(stays) / 20 <= 120  # admissions per 1,000 members
    # Stays spanning two months.
    spanning = discharge.dt.to_period("M") != admit.dt.to_period("M")
    assert spanning.sum() >= 20
    # Long stays billed as interim claims at one facility with adjacent or overlapping dates.
    interim = stays[stays["bill_type"].isin(["112", "114"])]
    assert len(interim) >= 4
    pairs = interim.groupby(["member_id", "facility_npi", "admission_date"]).size()
    assert (pairs == 2).any()
    complete = stays[stays["discharge_date"].notna()].copy()
    complete["admit"] = _dates(complete, "admission_date")
    complete["discharge"] = _dates(complete, "discharge_date")
    complete = complete.sort_values(["member_id", "admit"])
    nxt = complete.groupby("member_id").shift(-1)
    # Transfers: the next stay starts the day of discharge, at another hospital.
    transfer = (nxt["admit"] == complete["discharge"]) & (
        nxt["facility_npi"] != complete["facility_npi"]
    )
    assert transfer.sum() >= 3
    assert complete.loc[transfer, "discharge_status"].isin(["02", "62"]).mean() > 0.8
    # One bed at a time: no stay starts before the previous one ended.
    assert not (nxt["admit"] < complete["discharge"]).any()
    # Readmissions within 30 days, some in another month.
    days = (nxt["admit"] - complete["discharge"]).dt.days
    readmit = (days >= 1) & (days <= 30)
    assert readmit.sum() >= 20
    assert (readmit & (nxt["admit"].dt.month != complete["discharge"].dt.month)).sum() >= 3
    # Deaths in hospital.
    assert (stays["discharge_status"] == "20").sum() >= 3


def test_emergency_visits_have_several_lines(carrier: dict[str, pd.DataFrame]) -> None:
    med = carrier["medical_claims"]
    ed_line = (
        med["revenue_code"].isin(ED_REVENUE)
        | (med["place_of_service"] == "23")
        | med["hcpcs"].isin([f"9928{i}" for i in range(1, 6)])
    ).fillna(False)
    ed_claims = pa.array(med.loc[ed_line.to_numpy(dtype=bool), "claim_id"].unique())
    in_visit = pc.is_in(pa.array(med["claim_id"]), value_set=ed_claims)
    visits = pa.table(
        {"member": pa.array(med["member_id"]), "day": pa.array(med["claim_start_date"])}
    ).filter(in_visit)
    per_day = visits.group_by(["member", "day"]).aggregate([([], "count_all")])
    counts = np.asarray(per_day["count_all"].to_numpy())
    assert len(counts) > 1_000
    assert (counts >= 3).mean() > 0.7


def test_quality_signals(carrier: dict[str, pd.DataFrame]) -> None:
    elig = carrier["eligibility"].drop_duplicates("member_id").set_index("member_id")
    med = carrier["medical_claims"]
    age = (pd.Timestamp("2026-12-31") - _dates(elig, "birth_date")).dt.days / 365.25
    age.index = elig.index
    # Mammograms for many women 50-74.
    women = elig.index[(elig["sex"] == "F") & (age >= 52) & (age <= 74)]
    screened = _distinct(med[med["hcpcs"].isin(MAMMOGRAM).fillna(False)], "member_id")
    assert 0.35 <= len(screened & set(women)) / len(women) <= 0.8
    # Diabetes in about 9% of adults; HbA1c tests for most of them.
    diabetic_line = np.zeros(len(med), dtype=bool)
    for i in range(1, 11):
        diabetic_line |= _matches(med, f"dx{i}", "^E1[01]")
    diabetics = _distinct(med[diabetic_line], "member_id")
    adults = set(elig.index[age >= 18])
    assert 0.06 <= len(diabetics & adults) / len(adults) <= 0.13
    tested = _distinct(med[med["hcpcs"].isin(["83036", "83037"]).fillna(False)], "member_id")
    assert len(tested & diabetics) / len(diabetics) > 0.6

    # Substance use, HIV and mental health diagnoses.
    def count(pattern: str) -> int:
        return sum(int(_matches(med, f"dx{i}", pattern).sum()) for i in range(1, 11))

    assert count("^F1[0-9]") > 500
    assert count("^(B20|Z21)$") > 20
    assert count("^F([2-3][0-9]|4[0-8])") > 2_000


def test_most_service_categories_have_lines(carrier: dict[str, pd.DataFrame]) -> None:
    med = carrier["medical_claims"]
    keys = ["claim_type", "bill_type", "revenue_code", "place_of_service", "hcpcs", "drg"]
    combos = med[keys].astype(object).where(med[keys].notna(), None).drop_duplicates()
    rules = service_category_rules()
    categories = {r.category for r in rules}
    seen = set()
    for row in combos.itertuples(index=False):
        category = _categorise(rules, *row)
        if category is not None:
            seen.add(category)
    missing = {(c.service_category_2, c.service_category_3) for c in categories - seen}
    assert len(missing) <= 2, missing


def _categorise(
    rules: tuple[ServiceCategoryRule, ...],
    claim_type: str,
    bill: str | None,
    revenue: str | None,
    pos: str | None,
    hcpcs: str | None,
    drg: str | None,
) -> object:
    def ok(condition: CodeCondition | None, value: str | None) -> bool:
        if condition is None:
            return True
        if value is None:
            return False
        return value in condition.codes or any(
            len(value) == len(low) and low <= value <= high for low, high in condition.ranges
        )

    kinds = drg_types()
    for rule in rules:  # in priority order
        if rule.claim_type and rule.claim_type != claim_type:
            continue
        if rule.bill_type_prefix and not (bill and bill.startswith(rule.bill_type_prefix)):
            continue
        if rule.drg_type and not (drg and kinds.get(drg) == rule.drg_type):
            continue
        if all(
            ok(c, v)
            for c, v in (
                (rule.revenue_code, revenue),
                (rule.place_of_service, pos),
                (rule.hcpcs, hcpcs),
                (rule.drg, drg),
            )
        ):
            return rule.category
    return None


# --- pharmacy and rebates -----------------------------------------------------------------


def test_pharmacy(carrier: dict[str, pd.DataFrame]) -> None:
    rx = carrier["pharmacy_claims"]
    first = rx[rx["claim_status"] != "reversed"]
    assert set(rx["days_supply"]) == {30, 90}
    assert set(rx["drug_class"].dropna()) == DRUG_CLASSES
    assert 0.86 <= first["generic"].mean() <= 0.94
    assert 0.05 <= (first["channel"] == "mail").mean() <= 0.15
    specialty = first[first["specialty"].astype(bool)]
    assert (specialty["channel"] == "specialty").all()
    assert 0.008 <= len(specialty) / len(first) <= 0.025
    allowed = _cents(rx, "allowed_amount")
    share = allowed[rx["specialty"].astype(bool).to_numpy()].sum() / allowed.sum()
    assert 0.3 <= share <= 0.6
    paid, member = _cents(rx, "paid_amount"), _cents(rx, "member_paid_amount")
    assert (allowed == paid + member).all()
    reversed_fills = rx[rx["claim_status"] == "reversed"]
    assert len(reversed_fills) > 100
    net = pd.Series(allowed).groupby(rx["claim_id"].to_numpy()).sum()
    assert (net[reversed_fills["claim_id"].unique()] == 0).all()
    assert (rx.loc[rx["claim_status"] == "denied", "paid_date"].isna()).all()
    # Chronic prescriptions are refilled: the same product, again and again.
    refills = pa.table({"member": pa.array(first["member_id"]), "ndc": pa.array(first["ndc"])})
    counts = refills.group_by(["member", "ndc"]).aggregate([([], "count_all")])["count_all"]
    assert int(pc.sum(pc.greater_equal(counts, 4)).as_py()) > 5_000


def test_diabetics_fill_antidiabetics_and_statins(carrier: dict[str, pd.DataFrame]) -> None:
    rx = carrier["pharmacy_claims"]
    elig = carrier["eligibility"].drop_duplicates("member_id").set_index("member_id")
    age = (pd.Timestamp("2026-12-31") - _dates(elig, "birth_date")).dt.days / 365.25
    age.index = elig.index
    fills = rx[rx["claim_status"] == "paid"]
    antidiabetic = fills[fills["drug_class"] == "antidiabetic"].groupby("member_id").size()
    regular = antidiabetic[antidiabetic >= 2].index
    assert len(regular) > 0.5 * len(antidiabetic) and len(regular) > 500
    middle = [m for m in regular if 40 <= age[m] <= 75]
    statin = set(fills.loc[fills["drug_class"] == "statin", "member_id"])
    assert len(statin & set(middle)) / len(middle) > 0.6


def test_rebates(carrier: dict[str, pd.DataFrame]) -> None:
    rebates, rx = carrier["rebates"], carrier["pharmacy_claims"]
    assert set(rebates["quarter"]) == {"2026Q1", "2026Q2", "2026Q3", "2026Q4"}
    assert set(rebates["drug_class"]) == DRUG_CLASSES
    quarter = _dates(rx, "fill_date").dt.quarter.map(lambda q: f"2026Q{q}")
    allowed = (
        pd.Series(_cents(rx, "allowed_amount"))
        .groupby([quarter.to_numpy(), rx["drug_class"].to_numpy()])
        .sum()
    )
    for row in rebates.itertuples():
        rate = round(float(row.rebate_amount) * 100) / allowed[(row.quarter, row.drug_class)]
        assert 0.13 <= rate <= (0.3 if row.drug_class == "specialty biologic" else 0.28)


# --- calibration --------------------------------------------------------------------------


def test_calibration(carrier: dict[str, pd.DataFrame]) -> None:
    report = calibration_report({"c001": carrier})
    targets = {
        "pmpm_allowed": (467, 467 * 0.15),
        "top1_share": (0.22, 0.06),
        "top5_share": (0.50, 0.10),
        "no_spend_share": (0.13, 0.04),
        "medical_lines_per_member_year": (51, 10),
        "fills_per_member_year": (16, 4),
        "lag_paid_by_month_0": (0.60, 0.07),
        "lag_paid_by_month_1": (0.84, 0.05),
        "lag_paid_by_month_2": (0.92, 0.04),
        "lag_paid_by_month_3": (0.95, 0.03),
        "pharmacy_share": (0.25, 0.06),
        "paid_to_allowed": (0.82, 0.07),
    }
    for name, (target, tolerance) in targets.items():
        assert abs(report[name] - target) <= tolerance, (name, report[name])
    assert report["lag_paid_by_month_12"] == pytest.approx(1.0)
    # About 20% more elective surgery in December (about 1.0 without the uplift).
    assert 1.05 <= report["december_surgery_ratio"] <= 1.45
    assert report["over_100k_share"] < 0.006


def test_a_partial_year(tmp_path: Path) -> None:
    config = SynthConfig(carriers=1, members=600, months=3, seed=3)
    tables = read_carrier(write_carriers(tmp_path, config)[0])
    med, rx = tables["medical_claims"], tables["pharmacy_claims"]
    assert _dates(med, "claim_start_date").max() <= pd.Timestamp("2026-03-31")
    assert _dates(rx, "fill_date").max() <= pd.Timestamp("2026-03-31")
    start = _dates(tables["eligibility"], "enrollment_start_date")
    assert start.max() <= pd.Timestamp("2026-03-31")
    assert set(tables["rebates"]["quarter"]) == {"2026Q1"}
