"""The same carrier data delivered as partition folders, compressed CSV and UTF-16 text gives
the same cells as the plain files: through the engine for every metric, and in a federated
round over real gRPC."""

from __future__ import annotations

import gzip
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import zstandard

from carrier_node.data.files import FileSource
from carrier_node.policy import Policy
from carrier_node.query.engine import Engine
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.catalogue import METRICS
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from fedoversight.testing import SimulatedFederation

PERIOD = Period.parse("2026-01:2026-03")
SECRET = "2b7e151628aed2a6abf7158809cf4f3c"
EXACT = Policy(perturbation={"enabled": False})


def csv_bytes(table: pa.Table) -> bytes:
    """A table as CSV text: ISO dates, plain decimals, true/false, an empty field for null."""
    out = io.BytesIO()
    pacsv.write_csv(table, out, pacsv.WriteOptions(quoting_style="needed"))
    return out.getvalue()


def months(table: pa.Table, column: str) -> dict[str, pa.Table]:
    """The table's rows by the month of a date column (YYYY-MM), in month order."""
    keys = pc.strftime(table[column], format="%Y-%m")
    return {
        month: table.filter(pc.equal(keys, month))
        for month in sorted({str(k) for k in keys.to_pylist()})
    }


def repartition(plain: Path, out: Path) -> Path:
    """The carrier's Parquet tables as a carrier's extract might come: medical claims in
    Hive-style monthly Parquet folders, pharmacy claims as monthly gzip and zstd CSV files in
    one folder, eligibility as UTF-16 CSV, the rest as they are."""
    out.mkdir(parents=True)
    for path in plain.glob("*.parquet"):
        name = path.name.removesuffix(".parquet")
        table = pq.read_table(path)
        if name == "medical_claims":
            for month, rows in months(table, "claim_start_date").items():
                year, mm = month.split("-")
                folder = out / name / f"year={year}" / f"month={mm}"
                folder.mkdir(parents=True)
                pq.write_table(rows, folder / "part-0.parquet")
            (out / name / "_SUCCESS").write_text("")
        elif name == "pharmacy_claims":
            folder = out / name
            folder.mkdir()
            for i, (month, rows) in enumerate(months(table, "fill_date").items()):
                text = csv_bytes(rows)
                if i % 2:
                    data = zstandard.ZstdCompressor().compress(text)
                    (folder / f"fills-{month}.csv.zst").write_bytes(data)
                else:
                    (folder / f"fills-{month}.csv.gz").write_bytes(gzip.compress(text))
        elif name == "eligibility":
            utf16 = csv_bytes(table).decode("utf-8").encode("utf-16")
            (out / f"{name}.csv").write_bytes(utf16)
        else:
            shutil.copy(path, out / path.name)
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    from fedoversight.testing import SynthConfig, write_carriers

    root = tmp_path_factory.mktemp("layouts")
    (plain,) = write_carriers(
        root / "plain", SynthConfig(carriers=1, members=2_000, seed=5, year=2026, months=3)
    )
    yield plain, repartition(plain, root / "split")


def queries() -> list[QuerySpec]:
    out = []
    for spec in METRICS:
        group: list[D] = []
        if spec.one_of:
            group.append(min(spec.one_of))
        for extra in (D.MONTH, D.QUARTER, D.AGE_BAND, D.DRUG_CLASS):
            if extra in spec.dimensions and len(group) < 2:
                group.append(extra)
        out.append(wire.make_query(spec.name, spec.version, group))
    return out


def test_the_split_extract_is_read_as_partitions(layouts: tuple[Path, Path]) -> None:
    plain, split = layouts
    assert len(list((split / "medical_claims").rglob("*.parquet"))) >= 3
    assert {p.name.split(".", 1)[1] for p in (split / "pharmacy_claims").iterdir()} == {
        "csv.gz",
        "csv.zst",
    }
    with FileSource(plain, threads=2) as one, FileSource(split, threads=2) as other:
        assert one.tables == other.tables
        for table in sorted(one.tables):
            count = f"SELECT count(*) AS n FROM {table}"
            assert other.execute_arrow(count) == one.execute_arrow(count), table
        assert other.data_quality() == one.data_quality()


@pytest.fixture(scope="module")
def engines(layouts: tuple[Path, Path]) -> Iterator[tuple[Engine, Engine]]:
    plain, split = layouts
    with FileSource(plain, threads=2) as one, FileSource(split, threads=2) as other:
        yield (
            Engine(one, "c001", record_secret=SECRET),
            Engine(other, "c001", record_secret=SECRET),
        )


@pytest.mark.parametrize("query", queries(), ids=lambda q: q.metric)
def test_every_metric_gives_the_same_cells(
    engines: tuple[Engine, Engine], query: QuerySpec
) -> None:
    plain, split = engines
    expected = plain.evaluate(PERIOD, query)
    got = split.evaluate(PERIOD, query)
    assert expected.cells, "the metric has data to compare"
    assert got.cells == expected.cells


ROUND = [
    wire.make_query("enrollment.member_months", group_by=[D.MONTH]),
    wire.make_query("cost.pmpm", group_by=[D.AGE_BAND, D.SEX]),
    wire.make_query("cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY]),
    wire.make_query("rx.generic_dispensing_rate", group_by=[D.MONTH]),
]


async def test_a_round_over_the_split_extract_matches_the_plain_one(
    layouts: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two carriers holding the same data, one as plain files and one split: their tables in
    one federated round are the same, cell for cell."""
    plain, split = layouts
    async with SimulatedFederation({"plain": plain, "split": split}, tmp_path, policy=EXACT) as fed:
        assert fed.client is not None
        outcome = await fed.client.run_round(PERIOD, ROUND, deadline_seconds=120)
    assert outcome.state is RoundState.COMPLETE
    assert all(state is CarrierRoundState.ANSWERED for _, state, _ in outcome.carriers)
    by_scope: dict[str, list[tuple[object, object, list[object]]]] = {"plain": [], "split": []}
    for table in outcome.tables:
        if table.scope in by_scope:
            by_scope[table.scope].append(
                (table.metric, table.group_by, [(c.key, c.stats, c.status) for c in table.cells])
            )
    assert len(by_scope["plain"]) == len(ROUND)
    assert all(cells for _, _, cells in by_scope["plain"])
    assert by_scope["split"] == by_scope["plain"]
