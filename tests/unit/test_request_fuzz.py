"""Property tests: malformed, random and forged requests thrown at the node's decoder, front
door and policy check never crash it, never reach the data, and always end in a clear,
fixed refusal that is in the audit log."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrier_node.policy import Policy
from carrier_node.records.audit import read_entries, verify
from fedoversight import catalogue, errors, wire
from fedoversight.errors import OversightError
from fedoversight.signing import Signer
from fedoversight.v1 import types_pb2
from tests.unit.trust_kit import CountingSource, answer, secure_node, sign

METRICS = [m.name for m in catalogue.METRICS]
DIMENSIONS = list(types_pb2.Dimension.values())


def _public_messages() -> set[str]:
    out: set[str] = set()
    todo: list[type[OversightError]] = [OversightError]
    while todo:
        cls = todo.pop()
        out.add(cls.public)
        todo.extend(cls.__subclasses__())
    return out


PUBLIC = _public_messages()
#: Fixed for the whole run: strategies must not depend on the clock.
NOW_S = int(dt.datetime.now(dt.UTC).timestamp())

months = st.one_of(
    st.sampled_from(["2026-01", "2026-12", "2025-02", "1999-01"]),
    st.sampled_from(["2026-13", "2026-00", "26-01", "", "2026/01", "9999-99", "2026-1"]),
    st.text(max_size=12),
)
ids = st.one_of(st.sampled_from(["r1.q", "r1", "x"]), st.text(max_size=80))
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def filters(draw: st.DrawFn) -> types_pb2.Filter:
    return types_pb2.Filter(
        dimension=draw(st.integers(-3, 20)),  # type: ignore[arg-type]
        values=draw(
            st.lists(
                st.one_of(st.sampled_from(["F", "M", "FEHB", "0-17"]), st.text(max_size=50)),
                max_size=5,
            )
        ),
    )


@st.composite
def queries(draw: st.DrawFn) -> types_pb2.Query:
    return types_pb2.Query(
        metric=draw(st.one_of(st.sampled_from(METRICS), st.text(max_size=40))),
        metric_version=draw(st.integers(0, 5)),
        group_by=draw(st.lists(st.integers(-2, 20), max_size=5)),  # type: ignore[arg-type]
        filters=draw(st.lists(filters(), max_size=3)),
        parameters=draw(st.dictionaries(st.text(max_size=20), floats, max_size=3)),
    )


def timestamp(seconds: int, nanos: int) -> Timestamp:
    ts = Timestamp()
    ts.seconds, ts.nanos = seconds, nanos
    return ts


@st.composite
def metric_requests(draw: st.DrawFn) -> types_pb2.MetricRequest:
    """Anything of the MetricRequest shape: some fields sensible, many not."""
    now = NOW_S
    msg = types_pb2.MetricRequest(
        request_id=draw(ids),
        round_id=draw(ids),
        catalogue_version=draw(st.sampled_from(["1", "", "2", "1.0"])),
        queries=draw(st.lists(queries(), max_size=4)),
        nonce=draw(st.binary(max_size=80)),
    )
    if draw(st.booleans()):
        msg.period.CopyFrom(types_pb2.Period(first_month=draw(months), last_month=draw(months)))
    if draw(st.booleans()):
        seconds = draw(st.one_of(st.integers(now - 7200, now + 7200), st.integers(-(2**62), 2**62)))
        msg.issued_at.CopyFrom(timestamp(seconds, draw(st.integers(-(2**31), 2**31 - 1))))
    if draw(st.booleans()):
        seconds = draw(st.one_of(st.integers(now - 7200, now + 7200), st.integers(-(2**62), 2**62)))
        msg.expires_at.CopyFrom(timestamp(seconds, draw(st.integers(0, 999_999_999))))
    return msg


@given(st.one_of(st.binary(max_size=3000), metric_requests().map(lambda m: m.SerializeToString())))
@settings(max_examples=150, deadline=None)
def test_the_decoder_only_ever_raises_the_projects_errors(data: bytes) -> None:
    try:
        wire.decode_request_bytes(data)
    except OversightError as exc:
        assert type(exc).public in PUBLIC
        assert exc.detail  # every refusal has a reason


def test_random_and_forged_requests_are_refused_never_evaluated(tmp_path: Path) -> None:
    operator, rogue = Signer.generate(), Signer.generate()
    source = CountingSource()
    # Only one metric is answered: any well-formed request for another is a policy refusal.
    node = secure_node(
        tmp_path, operator, source, policy=Policy(metrics=("enrollment.member_months",))
    )
    loop = asyncio.new_event_loop()
    seen = {"n": 0}

    signing = st.sampled_from(["operator", "rogue", "unsigned", "garbage-signature"])
    payloads = st.one_of(
        st.binary(max_size=2000), metric_requests().map(lambda m: m.SerializeToString())
    )

    @given(payloads, signing, st.binary(min_size=0, max_size=80))
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    def check(data: bytes, how: str, junk: bytes) -> None:
        if how == "operator":
            signed = sign(data, operator)
        elif how == "rogue":
            signed = sign(data, rogue)
        elif how == "unsigned":
            signed = sign(data, None)
        else:
            signed = types_pb2.SignedRequest(request=data, signature=junk, key_id=operator.key_id)
        reply = loop.run_until_complete(answer(node, signed))
        seen["n"] += 1
        assert reply.HasField("refusal")
        assert reply.refusal.code != types_pb2.ERROR_CODE_UNSPECIFIED
        assert reply.refusal.public_message in PUBLIC
        assert source.calls == 0
        if how != "operator":
            assert reply.refusal.code == errors.AuthenticationError.code

    try:
        check()
    finally:
        loop.run_until_complete(node.shutdown())
        loop.close()
    # Every request is in the audit log with the decision on it, and the chain holds.
    entries = [e for _, e in read_entries(node.audit.path) if e is not None]
    decided = [e for e in entries if e["kind"] in ("refused", "resent")]
    received = [e for e in entries if e["kind"] in ("received", "resent")]
    assert len(decided) == len(received) == seen["n"]
    assert not [e for e in entries if e["kind"] in ("admitted", "released")]
    assert verify(node.audit.path).ok
