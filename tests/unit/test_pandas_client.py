"""The pandas client's parts that need no coordinator: reading an operator kit, building
queries with clear refusals, typed frames of the operator API's listings (the live client is
tested in tests/integration/test_client.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.pandas_client import (
    CARRIER_COLUMNS,
    ENV_SETTINGS,
    ROUND_COLUMNS,
    Client,
    _LoopThread,
    build_query,
    carriers_frame,
    connection_from_env,
    read_env_file,
    rounds_frame,
)
from fedoversight import wire
from fedoversight.dimensions import Dimension
from fedoversight.errors import ConfigError, InvalidRequestError, UnknownMetricError
from fedoversight.periods import Period
from fedoversight.v1 import operator_pb2


@pytest.fixture(autouse=True)
def no_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def write_kit(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "operator.env"
    path.write_text(
        "# written by provisioning\n"
        "\n"
        "OVERSIGHT_ADDRESS=127.0.0.1:50051\n"
        f"OVERSIGHT_CA_CERT={directory / 'ca.crt'}\n"
        "export OVERSIGHT_CERT='operator.crt'\n"
        'OVERSIGHT_KEY="operator.key"\n'
        "OTHER_SETTING=ignored\n",
        encoding="utf-8",
    )
    return path


def test_an_operator_kit_is_read_with_paths_relative_to_it(tmp_path: Path) -> None:
    env = write_kit(tmp_path / "kit")
    assert read_env_file(env)["OVERSIGHT_CERT"] == "operator.crt"
    c = connection_from_env(env)
    assert c.address == "127.0.0.1:50051"
    assert c.ca_cert == tmp_path / "kit" / "ca.crt"
    assert c.cert == tmp_path / "kit" / "operator.crt"
    assert c.key == tmp_path / "kit" / "operator.key"
    assert c.token_file is None and c.signing_key is None and c.server_name is None


def test_arguments_beat_the_environment_which_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = write_kit(tmp_path / "kit")
    monkeypatch.setenv("OVERSIGHT_ADDRESS", "coordinator.example:50051")
    monkeypatch.setenv("OVERSIGHT_TOKEN_FILE", str(tmp_path / "token"))
    c = connection_from_env(env)
    assert c.address == "coordinator.example:50051"
    assert c.token_file == tmp_path / "token"
    c = connection_from_env(env, address="10.0.0.5:50051", server_name="coordinator")
    assert c.address == "10.0.0.5:50051" and c.server_name == "coordinator"
    assert c.cert == tmp_path / "kit" / "operator.crt"


def test_a_kit_without_an_address_or_a_bad_line_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="OVERSIGHT_ADDRESS"):
        connection_from_env(empty)
    bad = tmp_path / "bad.env"
    bad.write_text("OVERSIGHT_ADDRESS\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.env:1"):
        connection_from_env(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        connection_from_env(tmp_path / "missing.env")
    with pytest.raises(ConfigError, match="adress"):
        connection_from_env(empty, adress="127.0.0.1:1")


def test_queries_say_what_is_wrong_and_what_would_do() -> None:
    with pytest.raises(UnknownMetricError, match=r"did you mean cost\.pmpm"):
        build_query("cost.pmp")
    with pytest.raises(UnknownMetricError, match="no version 9"):
        build_query("cost.pmpm", version=9)
    with pytest.raises(InvalidRequestError, match=r"unknown dimension .county.*state"):
        build_query("cost.pmpm", by="county")
    with pytest.raises(InvalidRequestError, match=r"does not accept month \(it accepts:"):
        build_query("cost.distribution", by="month")
    with pytest.raises(InvalidRequestError, match="named twice"):
        build_query("cost.pmpm", by="state,state")
    query = build_query("cost.pmpm", by="month, state", filters={"state": "CA"})
    assert query.group_by == (Dimension.MONTH, Dimension.STATE)
    assert query.filters == ((Dimension.STATE, ("CA",)),)
    # A metric that groups by one of a set gets the first when none is named, as on the CLI.
    by_category = build_query("cost.pmpm_by_service_category")
    assert by_category.group_by == (Dimension.SERVICE_CATEGORY,)


def stamp(value: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def test_round_summaries_are_a_typed_frame() -> None:
    created = dt.datetime(2026, 4, 2, 9, 30, tzinfo=dt.UTC)
    summary = operator_pb2.RoundSummary(
        round_id="r-1",
        state=operator_pb2.ROUND_STATE_PARTIAL,
        period=wire.period_to_pb(Period.parse("2026Q1")),
        queries=[wire.query_to_pb(build_query(m)) for m in ("cost.pmpm", "util.ed_visits")],
        carriers_asked=3,
        carriers_answered=2,
        created_at=stamp(created),
    )
    frame = rounds_frame([summary])
    columns = dict(ROUND_COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == columns
    row = frame.iloc[0]
    assert row["created_at"].to_pydatetime() == created
    assert row["finished_at"] is not None and str(row["finished_at"]) == "NaT"
    assert (row["period"], row["state"], row["metrics"]) == (
        "2026-01:2026-03",
        "partial",
        "cost.pmpm,util.ed_visits",
    )
    assert str(row["first_month"].date()) == "2026-01-01"
    assert str(row["last_month"].date()) == "2026-03-01"
    assert (row["carriers_asked"], row["carriers_answered"]) == (3, 2)
    assert pd.isna(row["suite"]) and pd.isna(row["scheduled_for"])  # an operator's round
    due = dt.datetime(2026, 4, 5, 6, 0, tzinfo=dt.UTC)
    scheduled = rounds_frame(
        [
            operator_pb2.RoundSummary(
                round_id="r-2",
                period=wire.period_to_pb(Period.parse("2026-03")),
                state=operator_pb2.ROUND_STATE_COMPLETE,
                suite="monthly",
                scheduled_for=stamp(due),
            )
        ]
    ).iloc[0]
    assert scheduled["suite"] == "monthly"
    assert scheduled["scheduled_for"].to_pydatetime() == due
    empty = rounds_frame([])
    assert {c: str(t) for c, t in empty.dtypes.items()} == columns and len(empty) == 0


def test_carriers_never_seen_have_no_last_seen() -> None:
    frame = carriers_frame(
        [
            operator_pb2.CarrierInfo(carrier_id="c1", connected=False),
            operator_pb2.CarrierInfo(
                carrier_id="c2",
                connected=True,
                node_version="0.1.0",
                last_seen=stamp(dt.datetime(2026, 4, 2, tzinfo=dt.UTC)),
            ),
        ]
    )
    assert {c: str(t) for c, t in frame.dtypes.items()} == CARRIER_COLUMNS
    assert frame["last_seen"].isna().tolist() == [True, False]
    assert frame["node_version"].isna().tolist() == [True, False]
    assert frame["connected"].tolist() == [False, True]


def test_the_synchronous_client_stops_its_thread_when_closed_or_dropped() -> None:
    """No connection is made until a call: these clients never reach the network."""
    kept = Client("127.0.0.1:9", ca_cert=None)
    thread = kept._runner.thread
    assert thread.is_alive() and thread.daemon
    kept.close()
    kept.close()  # again: nothing
    assert not thread.is_alive()
    with pytest.raises(ConfigError, match="closed"):
        kept.rounds()
    dropped = Client("127.0.0.1:9", ca_cert=None)
    thread = dropped._runner.thread
    del dropped
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_an_interrupted_call_stops_on_the_clients_loop_too() -> None:
    """A notebook's stop button (SIGINT: KeyboardInterrupt while a call waits) cancels the
    call on the client's own loop rather than leaving it running there."""
    assert threading.current_thread() is threading.main_thread()  # where signals arrive
    runner = _LoopThread()
    started = threading.Event()
    cancelled = threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt() -> None:
        if started.wait(30):
            time.sleep(0.2)  # the caller is waiting for the call by now
            os.kill(os.getpid(), signal.SIGINT)  # what a kernel's interrupt sends

    # Python's own SIGINT handler, as in a kernel: in CI another test in the same worker had
    # left a handler of its own that raised nothing, and the call ran its course.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.call(slow())
        assert cancelled.wait(10)
    finally:
        signal.signal(signal.SIGINT, previous)
        runner.stop()
