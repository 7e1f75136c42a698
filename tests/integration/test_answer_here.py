"""The node daemon answering a request another transport delivered (Flower's ClientApp shim
calls this): the same checks, signing and records as a request from the stream, the answer
returned instead of sent. Needs no Flower."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from carrier_node.config import load_node_config
from carrier_node.daemon import NodeDaemon
from coordinator.receipts import verify_result
from coordinator.rounds import new_request, sign_request
from fedoversight import wire
from fedoversight.periods import Period
from fedoversight.signing import Signer, Verifier
from fedoversight.testing import SimulatedFederation
from fedoversight.v1 import types_pb2
from oversight_sim.flower_sim import write_node_tomls

PERIOD = Period.parse("2026-01:2026-03")


@pytest.fixture(scope="module")
def carrier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fedoversight.testing import SynthConfig, write_carriers

    root = tmp_path_factory.mktemp("answer-here")
    (one,) = write_carriers(root, SynthConfig(carriers=1, members=1_500, seed=3, months=3))
    return {one.name: one}


async def test_a_request_answered_here_is_signed_kept_and_never_streamed(
    carrier: dict[str, Path], tmp_path: Path
) -> None:
    fed = SimulatedFederation(carrier, tmp_path)
    ((carrier_id, toml),) = write_node_tomls(fed).items()
    pki = fed.provision()
    request = new_request(
        PERIOD,
        [wire.make_query("enrollment.member_months")],
        dt.timedelta(minutes=10),
        carriers=[carrier_id],
        deadline=dt.timedelta(minutes=2),
    )
    signed = sign_request(request, Signer.load(pki.operator_signing_key))
    node = NodeDaemon(load_node_config(toml))
    try:
        await node.start_here()
        first = await node.answer_here(signed)
        again = await node.answer_here(signed)  # a second delivery of the same bytes
        # Another request, its signature not the operator's: refused at the gate.
        other = new_request(
            PERIOD,
            [wire.make_query("enrollment.member_months")],
            dt.timedelta(minutes=10),
            carriers=[carrier_id],
        )
        refused = await node.answer_here(sign_request(other, Signer.generate()))
        assert node.connection.outgoing is None  # nothing went to a stream
    finally:
        await node.shutdown()

    assert first is not None and first.HasField("result")
    result = verify_result(
        carrier_id,
        bytes(first.result.result),
        bytes(first.result.signature),
        first.result.key_id,
        verifier=Verifier.load(pki.carriers[carrier_id].result_public_key),
        require_signature=True,
        request_bytes=bytes(signed.request),
    )
    assert result.request_id == request.request_id and len(result.tables) == 1
    # The answer was kept: delivered again, the very same signed bytes come back.
    assert again == first
    assert refused is not None and refused.HasField("refusal")
    assert refused.refusal.code == types_pb2.ERROR_CODE_UNAUTHENTICATED
