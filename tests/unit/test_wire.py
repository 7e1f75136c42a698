"""The wire contract: strict decoding, round trips, refusal of anything off-contract."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import (
    AuditAnchor,
    CellResult,
    DisclosureSummary,
    Method,
    Missing,
    Perturbation,
    RequestSpec,
    ResultSpec,
    Status,
    StatValue,
    Withheld,
)
from fedoversight.errors import InvalidRequestError, UnknownMetricError
from fedoversight.histogram import N_BINS, Histogram
from fedoversight.periods import Period
from fedoversight.v1 import types_pb2


def request(**changes: object) -> RequestSpec:
    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    base = {
        "request_id": "r1.q",
        "round_id": "r1",
        "catalogue_version": "1",
        "period": Period.parse("2026-01:2026-03"),
        "queries": (wire.make_query("cost.pmpm", group_by=[D.MONTH]),),
        "issued_at": now,
        "expires_at": now + dt.timedelta(hours=1),
        "nonce": b"n" * 16,
        "carriers": ("c001", "c002"),
    }
    base.update(changes)
    return RequestSpec(**base)  # type: ignore[arg-type]


def test_request_round_trip() -> None:
    spec = request()
    data = wire.request_to_pb(spec).SerializeToString()
    assert wire.decode_request_bytes(data) == spec


def test_a_request_names_its_carriers_once_each_in_order() -> None:
    for carriers in (("c002", "c001"), ("c001", "c001"), ("c001", "member 17")):
        data = wire.request_to_pb(request(carriers=carriers)).SerializeToString()
        with pytest.raises(InvalidRequestError):
            wire.decode_request_bytes(data)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: setattr(m, "request_id", "bad id; drop table"),
        lambda m: setattr(m, "catalogue_version", "999"),
        lambda m: setattr(m, "nonce", b"short"),
        lambda m: m.ClearField("period"),
        lambda m: setattr(m.period, "first_month", "2026-13"),
        lambda m: setattr(m.period, "last_month", "2025-01"),
        lambda m: m.ClearField("queries"),
        lambda m: setattr(m.queries[0], "metric", "cost.nope"),
        lambda m: setattr(m.queries[0], "metric_version", 99),
        lambda m: m.queries[0].group_by.append(4),  # month twice
        lambda m: m.queries[0].group_by.append(12),
        lambda m: m.queries[0].group_by.append(77),
        lambda m: m.queries[0].filters.add(dimension=9, values=["VA'; DROP TABLE x;--"]),
        lambda m: m.queries[0].filters.add(dimension=3, values=[]),
        lambda m: m.queries[0].parameters.__setitem__("sql", 1.0),
    ],
)
def test_off_contract_requests_are_refused(mutate: object) -> None:
    msg = wire.request_to_pb(request())
    mutate(msg)  # type: ignore[operator]
    with pytest.raises((InvalidRequestError, UnknownMetricError)):
        wire.decode_request_bytes(msg.SerializeToString())


def test_garbage_bytes_are_refused_cleanly() -> None:
    with pytest.raises(InvalidRequestError) as info:
        wire.decode_request_bytes(b"\xff\xfe\x00garbage-member-M123")
    assert "M123" not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(InvalidRequestError, UnknownMetricError):
        wire.decode_request_bytes(data)


def test_hostile_filter_values_never_pass() -> None:
    for value in ("FEHB' OR '1'='1", "FEHB;", "x" * 50, "fehb"):
        with pytest.raises(InvalidRequestError):
            wire.make_query("cost.pmpm", filters={D.PROGRAM: [value]})


def test_result_cells_round_trip_with_histograms_and_withheld_values() -> None:
    hist = Histogram(tuple(range(N_BINS)), tuple(10 * i for i in range(N_BINS)), (3, 70))
    cell = CellResult(
        key=((D.MONTH, "2026-01"),),
        stats=(
            StatValue("member_months", Status.PERTURBED, 1234),
            StatValue("members", Status.WITHHELD, None, Missing(1, 10, 10, Withheld.SMALL)),
            StatValue("claimants", Status.WITHHELD, None, Missing(1, reason=Withheld.REST)),
            StatValue("spend", Status.PERTURBED, hist, Missing(1, None, 20, Withheld.SMALL)),
            StatValue("allowed_cents", Status.RELEASED, 2**60 + 7, Missing(3, None, None)),
        ),
    )
    back = wire.cell_from_pb(wire.cell_to_pb(cell))
    assert back == cell
    assert back.status is Status.WITHHELD


def test_a_result_carries_its_audit_anchor_under_the_signature() -> None:
    spec = ResultSpec(
        request_id="r1.q",
        round_id="r1",
        carrier_id="c001",
        catalogue_version="1",
        tables=(),
        request_digest=b"d" * 32,
        data_snapshot="snap",
        audit_anchor=AuditAnchor(41, "ab" * 32),
    )
    data = wire.result_to_pb(spec).SerializeToString()
    assert wire.decode_result_bytes(data).audit_anchor == AuditAnchor(41, "ab" * 32)
    # Results of nodes that predate anchors have none; a malformed anchor is refused.
    older = dataclasses.replace(spec, audit_anchor=None)
    assert (
        wire.decode_result_bytes(wire.result_to_pb(older).SerializeToString()).audit_anchor is None
    )
    bad = wire.result_to_pb(spec)
    bad.audit_anchor.hash = b"short"
    with pytest.raises(InvalidRequestError):
        wire.decode_result_bytes(bad.SerializeToString())


def test_a_withheld_statistic_never_carries_its_value() -> None:
    msg = wire.stat_to_pb(StatValue("members", Status.WITHHELD, 7))
    assert msg.WhichOneof("value") is None
    msg.integer = 7  # a hostile node sends one anyway
    with pytest.raises(InvalidRequestError):
        wire.stat_from_pb(msg)


def test_disclosure_summaries_round_trip_and_malformed_ones_are_refused() -> None:
    summary = DisclosureSummary(
        min_cell_size=11,
        cells_released=4,
        cells_withheld=1,
        cells_partly_withheld=2,
        cells_perturbed=6,
        policy_digest="abc",
        method=Method.CELL_KEY,
        perturbation=Perturbation(5, 3.0, 10.0, 0.5, 2),
        withheld=((Withheld.SMALL, 3), (Withheld.REST, 1)),
    )
    assert wire.disclosure_from_pb(wire.disclosure_to_pb(summary), ["members"]) == summary
    bad = wire.disclosure_to_pb(summary)
    bad.perturbation.p_percent = float("nan")
    with pytest.raises(InvalidRequestError):
        wire.disclosure_from_pb(bad, ["members"])
    bad = wire.disclosure_to_pb(summary)
    bad.withheld[0].reason = 99  # type: ignore[assignment]
    with pytest.raises(InvalidRequestError):
        wire.disclosure_from_pb(bad, ["members"])


def test_cell_keys_from_the_wire_are_checked() -> None:
    msg = types_pb2.Cell(key=[types_pb2.GroupKey(dimension=9, value="member M0001")])
    with pytest.raises(InvalidRequestError):
        wire.cell_from_pb(msg)


def test_queries_must_group_by_one_service_category_level() -> None:
    with pytest.raises(InvalidRequestError):
        wire.make_query("cost.pmpm_by_service_category")
    with pytest.raises(InvalidRequestError):
        wire.make_query(
            "cost.pmpm_by_service_category", group_by=[D.SERVICE_CATEGORY, D.SERVICE_CATEGORY_2]
        )
    with pytest.raises(InvalidRequestError):
        wire.make_query("enrollment.member_months", group_by=[D.SERVICE_CATEGORY])


def test_periods_parse_the_forms_operators_type() -> None:
    assert str(Period.parse("2026Q2")) == "2026-04:2026-06"
    assert len(Period.parse("2026").months()) == 12
    assert str(Period.parse("2025-11:2026-02")) == "2025-11:2026-02"
    for bad in ("2026-00", "26-01", "2026-01:2025-01", "1800-01", "2026Q5"):
        with pytest.raises(InvalidRequestError):
            Period.parse(bad)
