"""The analysts' pandas client (``fedoversight.client``) against a live coordinator with nodes
on loopback (mutual TLS, signed requests and results), as a notebook uses it:

- every column of a round's frame has its documented dtype, ``attrs`` describe the round, and
  the values are those of the tidy export of the same round;
- rounds, carriers and the catalogue as typed frames; several rounds in one (a trend, the
  newest revision of a period); progress of a round;
- the synchronous client in a thread whose event loop is running (a Jupyter kernel's);
- clear errors, never gRPC's: an unknown metric, a bad token, a viewer running a round, the
  coordinator out of reach;
- every code sample of docs/analysts.md, run in order as notebook cells.
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pandas as pd
import pytest

from coordinator import export
from coordinator.pandas_client import ENV_SETTINGS
from coordinator.schedule import ManualClock
from fedoversight.client import (
    CARRIER_COLUMNS,
    METRIC_COLUMNS,
    REVISION_COLUMNS,
    ROUND_COLUMNS,
    SUITE_COLUMNS,
    AsyncClient,
    AuthenticationError,
    Client,
    CoordinatorUnavailableError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    OversightError,
    UnknownMetricError,
)
from fedoversight.errors import ConfigError
from fedoversight.testing import (
    OPERATOR,
    TOKEN_OPERATOR,
    VIEWER,
    SimulatedFederation,
)
from tests.integration.test_schedule import (
    EXACT,
    FIRST_DUE,
    SCHEDULE,
    SECOND_DUE,
    SUITE,
    early_extract,
)
from tests.integration.test_trust import small, wait_for

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "analysts.md"
PERIOD = "2026-01:2026-03"
T = TypeVar("T")

#: The frame's columns and dtypes as the analysts' guide documents them (dimension columns
#: apart: string, and ``month`` a datetime).
FRAME_DTYPES = {
    "round_id": "string",
    "period": "string",
    "metric": "string",
    "metric_version": "Int64",
    "scope": "string",
    "statistic": "string",
    "kind": "string",
    "value": "Float64",
    "value_int": "Int64",
    "status": "string",
    "withheld": "boolean",
    "incomplete": "boolean",
    "noise_sd": "Float64",
    "unreliable": "boolean",
    "unreliable_reason": "string",
    "missing_carriers": "Int64",
    "missing_at_most": "Int64",
    "missing_members_at_most": "Int64",
    "carriers_asked": "Int64",
    "carriers_answered": "Int64",
}


def expected_columns(dimensions: list[str]) -> dict[str, str]:
    head = list(FRAME_DTYPES)[:5]
    tail = list(FRAME_DTYPES)[5:]
    dims = {d: "datetime64[ns]" if d == "month" else "string" for d in dimensions}
    return {
        **{c: FRAME_DTYPES[c] for c in head},
        **dims,
        **{c: FRAME_DTYPES[c] for c in tail},
    }


def assert_dtypes(frame: pd.DataFrame, expected: dict[str, str]) -> None:
    assert list(frame.columns) == list(expected)
    for column, dtype in expected.items():
        assert str(frame[column].dtype) == dtype, (column, frame[column].dtype)


def operator_env(fed: SimulatedFederation, name: str, directory: Path, address: str) -> Path:
    """The operator kit's ``operator.env`` as provisioning wrote it, with the address of this
    federation's coordinator (the kit was provisioned for port 0)."""
    assert fed.pki is not None
    kit = fed.pki.operators[name]
    assert kit.env_file is not None
    lines = [
        f"OVERSIGHT_ADDRESS={address}" if line.startswith("OVERSIGHT_ADDRESS=") else line
        for line in kit.env_file.read_text(encoding="utf-8").splitlines()
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "operator.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection comes from the kit the test writes, not from the machine's settings."""
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def in_notebook(cell: Callable[[], T]) -> T:
    """Run ``cell`` as a Jupyter kernel runs one: in a thread whose event loop is running."""

    async def kernel() -> T:
        asyncio.get_running_loop()  # the loop a notebook's code runs under
        return cell()

    return asyncio.run(kernel())


def same_values(frame: pd.DataFrame, tidy: pd.DataFrame, dims: list[str]) -> None:
    """The frame says what the tidy export says, row for row."""
    assert len(frame) == len(tidy) > 0
    for (_, got), (_, want) in zip(frame.iterrows(), tidy.iterrows(), strict=True):
        for column in ("round_id", "period", "metric", "scope", "statistic"):
            assert got[column] == want[column], column
        assert got["metric_version"] == want["metric_version"]
        for dim in dims:
            if dim == "month":
                assert got[dim] == pd.Timestamp(f"{want[dim]}-01"), dim
            else:
                assert got[dim] == want[dim], dim
        value = want["value"]
        figure = got["kind"] == "figure"
        if figure and got["scope"] != "program" and got["status"] == "withheld":
            # A carrier's rate on a value its node withheld: the export calls it incomplete,
            # the frame withheld with it (no value), as the charts show it.
            assert want["status"] == "incomplete" and bool(got["withheld"])
            assert pd.isna(got["value"]) and not bool(got["incomplete"])
            continue
        if value is None:
            assert pd.isna(got["value"]) and pd.isna(got["value_int"])
        elif isinstance(value, int):
            assert got["value_int"] == value and got["value"] == float(value)
        else:
            assert got["value"] == value and pd.isna(got["value_int"])
        if figure and want["status"] == "released":
            # The export calls every complete figure released; the frame says whether its
            # inputs were perturbed.
            assert got["status"] in ("released", "perturbed")
        else:
            assert got["status"] == want["status"], (got["statistic"], got["status"])
        for column in ("missing_carriers", "missing_at_most", "missing_members_at_most"):
            if want[column] is None:
                assert pd.isna(got[column]), column
            else:
                assert not pd.isna(got[column]) and got[column] == want[column], (
                    column,
                    got["statistic"],
                    got[column],
                    want[column],
                )
        assert got["carriers_asked"] == want["carriers_asked"]
        assert got["carriers_answered"] == want["carriers_answered"]


async def test_frames_of_a_live_federation_are_typed_and_match_the_export(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 3)
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        assert fed.pki is not None
        env = operator_env(fed, OPERATOR, tmp_path / "kit", fed.address)

        def session() -> dict[str, Any]:
            with Client.from_env(env) as client:
                seen: dict[str, Any] = {"client": repr(client)}
                seen["inpatient"] = client.run("util.inpatient", PERIOD, by="state")
                round_id = seen["inpatient"].attrs["round_id"]
                seen["outcome"] = client.outcome(round_id)
                seen["again"] = client.results(round_id)
                seen["pmpm"] = client.run(
                    "cost.pmpm",
                    PERIOD,
                    by=("month",),
                    purpose="quality-oversight",
                    justification="PMPM beside the quality measures",
                )
                seen["pmpm_outcome"] = client.outcome(seen["pmpm"].attrs["round_id"])
                seen["many"] = client.run_many(["cost.pmpm", "util.ed_visits"], "2026Q1")
                seen["rounds"] = client.rounds(limit=10)
                seen["carriers"] = client.carriers()
                seen["metrics"] = client.metrics()
                pending = client.run("util.ed_visits", "2026-02", by="sex", wait=False)
                seen["progress"] = list(client.watch(pending))
                seen["watched"] = client.results(pending)
                seen["both"] = client.results_many([round_id, pending])
            return seen

        seen = await asyncio.to_thread(in_notebook, session)
        # The asynchronous twin, on the test's own loop.
        async with AsyncClient.from_env(env) as aclient:
            twin = await aclient.results(seen["inpatient"].attrs["round_id"])

    inpatient = seen["inpatient"]
    assert seen["client"] == f"Client('{fed.address}')"
    assert_dtypes(inpatient, expected_columns(["state"]))
    assert_dtypes(seen["pmpm"], expected_columns(["month"]))
    # attrs describe the round.
    outcome = seen["outcome"]
    attrs = inpatient.attrs
    assert attrs["round_id"] == outcome.round_id
    assert set(inpatient["round_id"]) == {outcome.round_id}
    assert attrs["period"] == PERIOD and set(inpatient["period"]) == {PERIOD}
    assert attrs["state"] == "complete"
    assert attrs["carriers_asked"] == attrs["carriers_answered"] == 3
    assert sorted(c["carrier_id"] for c in attrs["carriers"]) == sorted(dirs)
    assert all(c["state"] == "answered" for c in attrs["carriers"])
    assert attrs["late"] == []
    assert attrs["complete"] is (not bool(inpatient["withheld"].any()))
    # The purpose declared, inside the signed request; the default where none was given.
    assert seen["pmpm"].attrs["purpose"]["code"] == "quality-oversight"
    assert seen["pmpm"].attrs["purpose"]["justification"] == "PMPM beside the quality measures"
    assert attrs["purpose"]["code"] == "plan-cost-oversight"
    # Values: those of the tidy export of the same round, row for row.
    tidy = export.tidy_rows(outcome.tables, outcome.info())
    same_values(inpatient, tidy, ["state"])
    assert set(inpatient["scope"]) == {"program", *dirs}
    assert inpatient["withheld"].any(), "the small carriers withhold some state's value"
    assert inpatient["incomplete"].any()
    assert (inpatient.loc[inpatient["withheld"], "status"] == "withheld").all()
    assert inpatient.loc[inpatient["withheld"], "value"].isna().all()
    figures = inpatient[inpatient["kind"] == "figure"]
    assert figures["value_int"].isna().all() and len(figures) > 0
    # Reading the round again gives the same frame, by either client.
    pd.testing.assert_frame_equal(seen["again"], inpatient)
    pd.testing.assert_frame_equal(twin, inpatient)
    assert seen["again"].attrs == attrs == twin.attrs
    # Months are datetimes, one per month of the period for each scope.
    pmpm = seen["pmpm"]
    months = sorted(pmpm["month"].dropna().unique())
    assert [pd.Timestamp(m).strftime("%Y-%m") for m in months] == ["2026-01", "2026-02", "2026-03"]
    pmpm_outcome = seen["pmpm_outcome"]
    same_values(pmpm, export.tidy_rows(pmpm_outcome.tables, pmpm_outcome.info()), ["month"])
    # Several metrics in one round.
    many = seen["many"]
    assert set(many["metric"]) == {"cost.pmpm", "util.ed_visits"}
    assert many["round_id"].nunique() == 1
    # Round summaries.
    rounds = seen["rounds"]
    columns = dict(ROUND_COLUMNS)
    assert_dtypes(rounds, columns)
    assert list(rounds["round_id"]) == [
        many["round_id"].iloc[0],
        pmpm.attrs["round_id"],
        attrs["round_id"],
    ]
    assert (rounds["state"] == "complete").all()
    assert rounds["created_at"].is_monotonic_decreasing
    assert (rounds["finished_at"] >= rounds["created_at"]).all()
    first = rounds[rounds["round_id"] == attrs["round_id"]].iloc[0]
    assert first["period"] == PERIOD and first["metrics"] == "util.inpatient"
    assert first["first_month"] == pd.Timestamp("2026-01-01")
    assert first["last_month"] == pd.Timestamp("2026-03-01")
    assert first["carriers_asked"] == first["carriers_answered"] == 3
    assert rounds.loc[rounds["round_id"] == many["round_id"].iloc[0], "metrics"].item() == (
        "cost.pmpm,util.ed_visits"
    )
    # Carriers and the catalogue.
    carriers = seen["carriers"]
    assert_dtypes(carriers, CARRIER_COLUMNS)
    assert sorted(carriers["carrier_id"]) == sorted(dirs)
    assert carriers["connected"].all() and carriers["last_seen"].notna().all()
    metrics = seen["metrics"]
    assert_dtypes(metrics, METRIC_COLUMNS)
    row = metrics[metrics["metric"] == "cost.pmpm"].iloc[0]
    assert "allowed_pmpm" in row["figures"].split(",") and "month" in row["dimensions"]
    assert metrics.attrs["catalogue_version"]
    # Progress, then the round's frame.
    progress = seen["progress"]
    assert progress and str(progress[-1].state) == "complete"
    assert progress[-1].answered == progress[-1].asked == 3
    watched = seen["watched"]
    assert_dtypes(watched, expected_columns(["sex"]))
    # Two rounds in one frame, dtypes kept, each round's attrs kept under "rounds".
    both = seen["both"]
    assert list(both["round_id"].unique()) == [attrs["round_id"], watched.attrs["round_id"]]
    assert len(both) == len(inpatient) + len(watched)
    assert_dtypes(both, expected_columns(["sex", "state"]))
    assert [r["round_id"] for r in both.attrs["rounds"]] == list(both["round_id"].unique())


def refusal(call: Callable[[], object]) -> OversightError:
    """The error ``call`` raises: one of the project's, never a gRPC error."""
    with pytest.raises(OversightError) as caught:
        call()
    assert not isinstance(caught.value, grpc.RpcError)
    return caught.value


async def test_errors_are_clear_and_never_grpc_errors(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 2)
    async with SimulatedFederation(dirs, tmp_path / "run", operator_port=True) as fed:
        assert fed.pki is not None
        operator = operator_env(fed, OPERATOR, tmp_path / "operator", fed.address)
        viewer = operator_env(fed, VIEWER, tmp_path / "viewer", fed.address)
        token_kit = fed.pki.operators[TOKEN_OPERATOR]
        assert token_kit.token is not None
        wrong_token = tmp_path / "wrong-token"
        wrong_token.write_text("not-the-token\n", encoding="utf-8")
        operator_port = fed.operator_address
        signing_key = fed.pki.operator_signing_key

        def session() -> dict[str, OversightError | pd.DataFrame]:
            seen: dict[str, OversightError | pd.DataFrame] = {}
            with Client.from_env(operator) as client:
                seen["unknown metric"] = refusal(lambda: client.run("cost.pmp", "2026-01"))
                seen["bad dimension"] = refusal(
                    lambda: client.run("cost.distribution", "2026-01", by="month")
                )
                seen["bad period"] = refusal(lambda: client.run("cost.pmpm", "2026-13"))
                seen["unknown round"] = refusal(lambda: client.results("r-none"))
            seen["closed"] = refusal(client.rounds)
            with Client.from_env(viewer) as client:
                identity = client.whoami()
                seen["viewer is"] = pd.DataFrame(
                    {"name": [identity.name], "role": [str(identity.role)], "via": [identity.via]}
                )
                seen["viewer reads"] = client.rounds()
                seen["viewer runs"] = refusal(lambda: client.run("cost.pmpm", "2026-01"))
            with Client(operator_port, ca_cert=token_kit.ca_cert, token_file=wrong_token) as c:
                seen["wrong token"] = refusal(c.rounds)
            with Client(
                operator_port, ca_cert=token_kit.ca_cert, token_file=token_kit.token
            ) as client:
                seen["token"] = client.run("enrollment.member_months", "2026-01")
            # Signed on this side with the operator key (the coordinator dispatches it as is).
            with Client.from_env(operator, signing_key=signing_key) as client:
                seen["signed"] = client.run("enrollment.member_months", "2026-02")
            with Client(fed.address, ca_cert=token_kit.ca_cert, token_file=token_kit.token) as c:
                seen["token on the main port"] = refusal(c.rounds)
            seen["no address"] = refusal(lambda: Client.from_env(tmp_path / "missing.env"))
            (tmp_path / "empty.env").write_text("# nothing\n", encoding="utf-8")
            seen["empty kit"] = refusal(lambda: Client.from_env(tmp_path / "empty.env"))
            return seen

        seen = await asyncio.to_thread(in_notebook, session)
        stopped = fed.address
    # The coordinator gone: out of reach, said as such.
    with Client.from_env(operator, address=stopped) as client:
        seen["gone"] = refusal(client.rounds)

    def error(name: str) -> OversightError:
        value = seen[name]
        assert isinstance(value, OversightError), name
        return value

    assert isinstance(error("unknown metric"), UnknownMetricError)
    assert "'cost.pmp'" in str(error("unknown metric"))
    assert "did you mean cost.pmpm" in str(error("unknown metric"))
    assert isinstance(error("bad dimension"), InvalidRequestError)
    assert "cost.distribution does not accept month" in str(error("bad dimension"))
    assert isinstance(error("bad period"), InvalidRequestError)
    assert isinstance(error("unknown round"), NotFoundError)
    assert "closed" in str(error("closed"))
    assert isinstance(seen["viewer reads"], pd.DataFrame) and len(seen["viewer reads"]) == 0
    viewer_is = seen["viewer is"]
    assert isinstance(viewer_is, pd.DataFrame)
    # The viewer's kit has a token too: sent with every call, it names the caller.
    assert viewer_is.iloc[0].tolist() == [VIEWER, "viewer", "token"]
    assert isinstance(error("viewer runs"), ForbiddenError)
    assert "role viewer may not" in str(error("viewer runs"))
    assert isinstance(error("wrong token"), AuthenticationError)
    assert "unknown token" in str(error("wrong token"))
    assert "token file" in str(error("wrong token"))
    token_frame = seen["token"]
    assert isinstance(token_frame, pd.DataFrame)
    assert token_frame.attrs["state"] == "complete" and len(token_frame) > 0
    signed = seen["signed"]
    assert isinstance(signed, pd.DataFrame)
    assert signed.attrs["state"] == "complete" and set(signed["period"]) == {"2026-02"}
    assert isinstance(error("token on the main port"), CoordinatorUnavailableError)
    assert "operator port only" in str(error("token on the main port"))
    assert isinstance(error("no address"), ConfigError)
    assert "missing.env" in str(error("no address"))
    assert isinstance(error("empty kit"), ConfigError)
    assert "OVERSIGHT_ADDRESS" in str(error("empty kit"))
    assert isinstance(error("gone"), CoordinatorUnavailableError)
    assert f"cannot reach the coordinator at {stopped}" in str(error("gone"))


async def test_a_trend_keeps_the_newest_revision_of_each_period(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    """Monthly rounds read back as one frame; a month asked again is a new revision of it:
    ``trend`` keeps the newest (and, with ``latest=False``, every one)."""
    dirs = small(federation_data, 2)
    async with SimulatedFederation(dirs, tmp_path / "run") as fed:
        env = operator_env(fed, OPERATOR, tmp_path / "kit", fed.address)

        def session() -> tuple[list[str], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
            with Client.from_env(env) as client:
                ids = [
                    client.run("cost.pmpm", month, wait=False)
                    for month in ("2026-02", "2026-01", "2026-01")
                ]
                for round_id in ids:
                    list(client.watch(round_id))
                other = client.run("util.ed_visits", "2026-01")  # another metric: left out
                assert other.attrs["state"] == "complete"
                return (
                    ids,
                    client.trend("cost.pmpm"),
                    client.trend("cost.pmpm", latest=False),
                    client.trend("cost.pmpm", rounds=ids[:2]),
                )

        ids, latest, every, chosen = await asyncio.to_thread(in_notebook, session)
    february, january, january_again = ids
    assert_dtypes(latest, expected_columns([]))
    assert set(latest["metric"]) == {"cost.pmpm"}
    # Oldest period first; January's newer round replaces its older one.
    assert list(latest["round_id"].unique()) == [january_again, february]
    assert list(latest["period"].unique()) == ["2026-01", "2026-02"]
    assert list(every["round_id"].unique()) == [january, january_again, february]
    assert list(chosen["round_id"].unique()) == [january, february]
    # The same data asked again: the same values (consistent noise), told apart by round.
    first = every[every["round_id"] == january].reset_index(drop=True)
    again = every[every["round_id"] == january_again].reset_index(drop=True)
    pd.testing.assert_frame_equal(first.drop(columns="round_id"), again.drop(columns="round_id"))
    assert [r["round_id"] for r in latest.attrs["rounds"]] == [january_again, february]


def size_of(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir())


def doc_cells(path: Path = DOC) -> list[str]:
    """The Python code samples of a page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", path.read_text(encoding="utf-8"), re.M | re.S)


def run_cells(cells: list[str]) -> dict[str, Any]:
    """Run code samples as notebook cells: one namespace, in a thread whose event loop is
    running, top-level ``await`` allowed (as in Jupyter)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}

    async def kernel() -> None:
        for number, source in enumerate(cells, start=1):
            code = compile(
                source, f"<analysts.md cell {number}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            result = eval(code, namespace)  # the page's own samples
            if asyncio.iscoroutine(result):
                await result

    asyncio.run(kernel())
    return namespace


async def test_every_sample_of_the_analysts_guide_runs(
    federation_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = doc_cells()
    assert len(cells) >= 10
    notebook = tmp_path / "notebook"
    # Three of the larger carriers (rates worth comparing) and the smallest (values withheld).
    by_size = sorted(federation_data, key=lambda c: size_of(federation_data[c]))
    dirs = {c: federation_data[c] for c in sorted([*by_size[-4:-1], by_size[0]])}
    # The coordinator runs the page's suite twice, on a clock moved by hand.
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(SCHEDULE, encoding="utf-8")
    clock = ManualClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    async with SimulatedFederation(dirs, tmp_path / "run", schedule=schedule, clock=clock) as fed:
        assert fed.client is not None and fed.coordinator is not None
        launched = fed.coordinator.scheduler.launched
        for runs, due in enumerate((FIRST_DUE, SECOND_DUE), start=1):
            clock.set(due)
            assert await wait_for(lambda n=runs: len(launched) == n)
            async for _ in fed.client.watch(launched[(SUITE, due)], timeout=120):
                pass
        operator_env(fed, OPERATOR, notebook, fed.address)
        monkeypatch.chdir(notebook)
        done = await asyncio.to_thread(run_cells, cells)
    client = done["client"]
    with pytest.raises(OversightError, match="closed"):
        client.rounds()  # the last cell closed it
    assert (done["me"].name, str(done["me"].role)) == (OPERATOR, "operator")
    assert sorted(done["carriers"]["carrier_id"]) == sorted(dirs)
    # The trend by carrier: months in time order, the program and each carrier a column.
    by_carrier = done["by_carrier"]
    assert str(by_carrier.index.dtype) == "datetime64[ns]"
    assert list(by_carrier.index.strftime("%Y-%m")) == ["2026-01", "2026-02", "2026-03"]
    assert set(by_carrier.columns) == {"program", *dirs}
    assert by_carrier.notna().all().all()
    assert (notebook / "pmpm-by-carrier.html").stat().st_size > 0
    # Monthly rounds read back as one trend, one round a month.
    program_pmpm = done["program_pmpm"]
    assert list(program_pmpm["period"]) == ["2026-01", "2026-02", "2026-03"]
    # The carriers ranked, with the noise their values carry.
    ranked = done["ranked"]
    assert set(ranked["scope"]) <= set(dirs) and len(ranked) >= 3
    assert ranked["value"].is_monotonic_decreasing
    assert (ranked["noise_sd"] > 0).all() and (ranked["error"] == 2 * ranked["noise_sd"]).all()
    assert (notebook / "visits-by-carrier.html").stat().st_size > 0
    # The markers, each found.
    assert len(done["withheld"]) > 0 and done["withheld"]["value"].isna().all()
    assert len(done["incomplete"]) > 0
    assert (done["incomplete"]["missing_carriers"] >= 1).all()
    unreliable = done["unreliable"]
    assert len(unreliable) > 0 and unreliable["unreliable_reason"].notna().all()
    # January asked twice: two revisions, the same values.
    january = done["january"]
    assert january["round_id"].nunique() == 2 and january["value"].nunique() == 1
    # The suite's runs, February's two revisions side by side.
    assert list(done["runs"]["suite"]) == [SUITE, SUITE]
    assert list(done["revisions"]["revision"]) == [1, 1, 2, 1]
    paid = done["paid"]
    assert list(paid["revision"]) == [1, 2] and paid["value"].notna().all()
    # The round followed to its end, read by both clients.
    assert str(done["progress"].state) == "complete"
    pd.testing.assert_frame_equal(done["visits"], done["visits_again"])
    assert len(done["latest"]) == 5


async def test_a_suites_two_revisions_of_a_month_on_a_fake_clock(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    """A schedule run on a clock moved by hand: February is computed before and after one
    carrier's late claims arrive, and the client shows both revisions, the second latest."""
    dirs = {
        c: Path(shutil.copytree(d, tmp_path / "data" / c))
        for c, d in small(federation_data, 3).items()
    }
    late = sorted(dirs)[0]
    full = tmp_path / "medical_claims.full.parquet"
    shutil.copyfile(dirs[late] / "medical_claims.parquet", full)
    assert early_extract(dirs[late]) > 0
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(SCHEDULE, encoding="utf-8")
    clock = ManualClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    async with SimulatedFederation(
        dirs, tmp_path / "run", policy=EXACT, schedule=schedule, clock=clock
    ) as fed:
        assert fed.coordinator is not None
        launched = fed.coordinator.scheduler.launched
        env = operator_env(fed, VIEWER, tmp_path / "kit", fed.address)
        with Client.from_env(env) as client:
            clock.set(FIRST_DUE)
            assert await wait_for(lambda: len(launched) == 1)
            first = launched[(SUITE, FIRST_DUE)]
            await asyncio.to_thread(lambda: list(client.watch(first)))
            # February's late claims arrive; the next run computes it again.
            replacement = dirs[late] / "medical_claims.parquet.new"
            shutil.copyfile(full, replacement)
            replacement.replace(dirs[late] / "medical_claims.parquet")
            clock.set(SECOND_DUE)
            assert await wait_for(lambda: len(launched) == 2)
            second = launched[(SUITE, SECOND_DUE)]

            def session() -> dict[str, pd.DataFrame]:
                list(client.watch(second))
                return {
                    "rounds": client.rounds(suite=SUITE),
                    "all rounds": client.rounds(),
                    "revisions": client.revisions(SUITE),
                    "february": client.revisions(SUITE, "2026-02"),
                    "latest": client.suite_results(SUITE),
                    "every": client.suite_results(SUITE, month="2026-02", latest=False),
                    "none": client.revisions("no-such-suite"),
                }

            seen = await asyncio.to_thread(in_notebook, session)
    rounds = seen["rounds"]
    assert_dtypes(rounds, ROUND_COLUMNS)
    assert list(rounds["round_id"]) == [second, first]
    assert set(rounds["suite"]) == {SUITE}
    assert [t.to_pydatetime() for t in rounds["scheduled_for"]] == [SECOND_DUE, FIRST_DUE]
    assert list(seen["all rounds"]["round_id"]) == [second, first]
    revisions = seen["revisions"]
    assert_dtypes(revisions, REVISION_COLUMNS)
    assert [
        (m.strftime("%Y-%m"), r, i, bool(x))
        for m, r, i, x in revisions[["month", "revision", "round_id", "latest"]].itertuples(
            index=False
        )
    ] == [
        ("2026-01", 1, first, True),
        ("2026-02", 1, first, False),
        ("2026-02", 2, second, True),
        ("2026-03", 1, second, True),
    ]
    assert list(seen["february"]["revision"]) == [1, 2]
    assert len(seen["none"]) == 0 and list(seen["none"].columns) == list(REVISION_COLUMNS)
    # The latest figures of each month (February's from the second run).
    latest = seen["latest"]
    assert_dtypes(latest, {**expected_columns(["month"]), **SUITE_COLUMNS})
    by_month = latest.groupby(latest["month"].dt.strftime("%Y-%m"))["round_id"].unique()
    assert {m: list(ids) for m, ids in by_month.items()} == {
        "2026-01": [first],
        "2026-02": [second],
        "2026-03": [second],
    }
    assert latest["latest"].all() and set(latest["suite"]) == {SUITE}
    # Both revisions of February, and how it moved: the late claims raised what was paid.
    every = seen["every"]
    assert set(every["month"].dt.strftime("%Y-%m")) == {"2026-02"}
    paid = every[(every["scope"] == "program") & (every["statistic"] == "paid_cents")]
    moved = paid.set_index("revision")["value_int"]
    assert list(moved.index) == [1, 2] and moved[2] > moved[1]
    assert list(paid["latest"]) == [False, True]
    assert [t.to_pydatetime() for t in paid["scheduled_for"]] == [FIRST_DUE, SECOND_DUE]
