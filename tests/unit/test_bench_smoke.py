"""The benchmark scripts still run end to end on a tiny carrier, so they do not rot.

Each script's ``main`` runs at a size where it takes seconds; the numbers are not looked at,
only that every phase ran and that the engine's cells equal each baseline's (the scripts exit
non-zero when they differ). The warehouse script needs the PostgreSQL server (127.0.0.1:5432,
database ``test``): without one it is skipped, unless FEDOVERSIGHT_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _script(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the warehouse script imports its sibling
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_node_suite_runs_every_phase_and_the_cells_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_suite = _script("node_suite")
    code = node_suite.main(["--members", "2000", "--data-dir", str(tmp_path), "--pandas", "shared"])
    out = capsys.readouterr().out
    assert code == 0, out
    for phase in ("sql", "pandas"):
        assert f"cells engine vs {phase} " in out
    assert "DIFFER" not in out
    assert out.count("identical for all metrics") == 2
    metrics = node_suite.suite_queries()
    assert all(q.metric in out for q in metrics)
    # The Polars baseline runs by default where polars is installed, and says so where not.
    if importlib.util.find_spec("polars") is None:
        assert "polars baseline: skipped, polars is not installed" in out
    else:
        for phase in ("engine-subset", "polars"):
            assert f"cells engine vs {phase} (statistics): identical for the 8 metrics" in out
        assert re.search(r"engine-subset / Polars \(render \+ evaluate\) +[0-9.]+x", out)
    # A second run finds the carrier cached.
    assert (tmp_path / "members2000-months1-seed7" / "complete").exists()


def test_polars_baseline_matches_the_hand_sql_over_several_months(tmp_path: Path) -> None:
    """Over two months (each span and claim of the period by its month), the Polars
    baseline's cells equal the hand SQL's, which equal the engine's (the test above)."""
    pytest.importorskip("polars", reason="polars is not installed (pip install '.[bench]')")
    node_suite = _script("node_suite")
    directory, _ = node_suite.carrier_data(tmp_path, 2000, 2)
    period = node_suite.period_of(2)
    polars = node_suite.phase_polars(directory, period)
    assert sorted(polars.cells) == sorted(node_suite.POLARS_METRICS)
    assert all(len(cells) == 2 for cells in polars.cells.values()), polars.cells
    sql = node_suite.phase_sql(directory, period)
    assert node_suite.differences(polars.cells, sql.cells) == []


def test_node_suite_compares_partitioned_claims_with_plain_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_suite = _script("node_suite")
    argv = ["--members", "2000", "--months", "2", "--data-dir", str(tmp_path), "--pandas", "none"]
    code = node_suite.main([*argv, "--partitioned", "--no-polars"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "medical_claims in 2 monthly files" in out
    assert "cells engine vs engine-partitioned (statistics): identical for all metrics" in out
    assert re.search(r"partitioned / plain evaluate +[0-9.]+x", out)
    split = tmp_path / "members2000-months2-seed7" / "c001-monthly" / "medical_claims"
    assert sorted(p.parent.name for p in split.rglob("*.parquet")) == ["month=01", "month=02"]


def test_heavy_blocks_profiles_the_suite_and_each_part_agrees_with_polars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("polars", reason="polars is not installed (pip install '.[bench]')")
    heavy = _script("heavy_blocks")
    argv = ["--members", "2000", "--data-dir", str(tmp_path), "--repeat", "1"]
    code = heavy.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    for part in ("spend", "service categories", "fills"):
        assert re.search(rf"^{part} +[0-9.]+ +[0-9.]+ +[0-9.]+x  agree$", out, re.M), out
    assert "DIFFER" not in out
    # Every metric's own statement is on the profile (the service categories' under that name).
    metrics = {q.metric for q in _script("node_suite").suite_queries()}
    metrics.discard("cost.pmpm_by_service_category")
    assert all(re.search(rf"^{re.escape(m)} ", out, re.M) for m in metrics), out
    # A Polars part that computes something else fails the benchmark.
    fills = heavy.POLARS["fills"]
    monkeypatch.setitem(
        heavy.POLARS, "fills", lambda d: {**fills(d), "voided rows": fills(d)["voided rows"] + 1}
    )
    assert heavy.main(argv) == 1
    assert "fills" in capsys.readouterr().out.split("DIFFER")[0].splitlines()[-1]


def test_node_suite_comparison_sees_a_difference() -> None:
    node_suite = _script("node_suite")
    engine = {"cost.pmpm": {("2026-01",): {"allowed_cents": 5, "allowed_cents__top1": 3}}}
    same = {"cost.pmpm": {("2026-01",): {"allowed_cents": 5, "allowed_cents__top1": 3}}}
    other_total = {"cost.pmpm": {("2026-01",): {"allowed_cents": 6, "allowed_cents__top1": 3}}}
    other_top = {"cost.pmpm": {("2026-01",): {"allowed_cents": 5, "allowed_cents__top1": 4}}}
    assert node_suite.differences(engine, same) == []
    assert node_suite.differences(engine, other_total) == ["cost.pmpm"]
    assert node_suite.differences(engine, other_top) == []  # the hand SQL's tops are its own
    assert node_suite.differences(engine, {}) == ["cost.pmpm"]


def test_round_overhead_times_the_federation_and_each_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    round_overhead = _script("round_overhead")
    code = round_overhead.main(
        [
            *("--carriers", "3", "--rounds", "3", "--members", "300"),
            *("--large", "6", "--large-rounds", "2", "--cpu-rounds", "2"),
            *("--node-processes", "1", "--overhead-members", "600", "--overhead-carriers", "1"),
            *("--overhead-rounds", "2", "--overhead-suite-rounds", "1"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    for line in (
        "federation round latency",
        "bare grpc.aio fan-out",
        "over mutual TLS",
        "signatures alone, 3 carriers",
        "trust-model floor",
        "coordinator CPU per carrier per round, 3 carriers",
        "coordinator CPU per carrier per round, 6 carriers",
        "6-carrier round, in-process nodes",
        "node overhead per result, trivial metric",
        "node overhead per result, monthly suite",
    ):
        assert line in out, line
    # Federation, bare, bare over TLS, signatures, a node's trivial result: each a measured,
    # positive median.
    medians = [float(m) for m in re.findall(r"p50 ([0-9.]+) ms", out)]
    assert len(medians) == 5 and all(m > 0 for m in medians), out
    cpu = [float(m) for m in re.findall(r"round, \d+ carriers .*?: ([0-9.]+) ms", out)]
    assert len(cpu) == 2 and all(m > 0 for m in cpu), out


@pytest.mark.postgres
def test_warehouse_suite_runs_and_both_paths_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = _script("warehouse")
    try:
        warehouse.connect().close()
    except psycopg.OperationalError as exc:
        if os.environ.get("FEDOVERSIGHT_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required here but unreachable: {type(exc).__name__}")
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432 (set up one to run this test)")
    code = warehouse.main(["--members", "600", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "identical for all metrics answered" in out
    assert "TIMEOUT" not in out
    schema = out.split(" into schema ", 1)[1].split()[0]
    with warehouse.connect() as con, con.cursor() as cur:  # its schema is gone
        cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
        row = cur.fetchone()
    assert row is not None and row[0] == 0
