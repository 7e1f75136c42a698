"""Shared pieces of the trust tests: identities, signed requests, a node without a network."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import pyarrow as pa

from carrier_node.config import NodeConfig, TlsFiles
from carrier_node.daemon import NodeDaemon
from carrier_node.policy import Policy
from fedoversight import wire
from fedoversight.domain import (
    CellResult,
    DisclosureSummary,
    QueryTable,
    RequestSpec,
    ResultSpec,
    Status,
    StatValue,
)
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.v1 import federation_pb2, types_pb2


class FakeContext:
    """What the coordinator's servicers read of a gRPC context."""

    def __init__(self, pem: bytes | None = None, token: str | None = None) -> None:
        self._auth = {"x509_pem_cert": [pem]} if pem is not None else {}
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class CountingSource:
    """A data source that counts how often anything was evaluated (and answers nothing)."""

    dialect = "duckdb"

    def __init__(self) -> None:
        self.calls = 0

    def execute_arrow(self, sql: str) -> pa.Table:
        self.calls += 1
        raise AssertionError("a refused request reached the data")

    def snapshot(self) -> str:
        return "snapshot"


def request_spec(**changes: object) -> RequestSpec:
    now = dt.datetime.now(dt.UTC)
    spec: dict[str, object] = {
        "request_id": "r1.q",
        "round_id": "r1",
        "catalogue_version": "1",
        "period": Period.parse("2026-01"),
        "queries": (wire.make_query("cost.pmpm"),),
        "issued_at": now - dt.timedelta(minutes=1),
        "expires_at": now + dt.timedelta(hours=1),
        "nonce": os.urandom(16),
        "carriers": ("c001",),
    }
    spec.update(changes)
    return RequestSpec(**spec)  # type: ignore[arg-type]


def sign(data: bytes, signer: Signer | None) -> types_pb2.SignedRequest:
    if signer is None:
        return types_pb2.SignedRequest(request=data)
    return types_pb2.SignedRequest(request=data, signature=signer.sign(data), key_id=signer.key_id)


def signed_request(signer: Signer | None, **changes: object) -> types_pb2.SignedRequest:
    return sign(wire.request_to_pb(request_spec(**changes)).SerializeToString(), signer)


def secure_node(
    tmp_path: Path,
    operator: Signer,
    source: CountingSource,
    carrier_id: str = "c001",
    policy: Policy | None = None,
) -> NodeDaemon:
    """A node in secure mode (no network is ever opened: the stream is not started)."""
    public = tmp_path / "operator.pub"
    public.write_bytes(operator.verifier.public_pem())
    (tmp_path / "data").mkdir(exist_ok=True)
    config = NodeConfig(
        carrier_id=carrier_id,
        coordinator="127.0.0.1:1",
        data_dir=tmp_path / "data",
        state_dir=tmp_path / "state",
        tls=TlsFiles(ca_cert=tmp_path / "ca.crt", cert=tmp_path / "n.crt", key=tmp_path / "n.key"),
        operator_public_key=public,
        audit_fsync=False,
    )
    return NodeDaemon(config, source=source, signer=Signer.generate(), policy=policy)


async def answer(node: NodeDaemon, signed: types_pb2.SignedRequest) -> federation_pb2.NodeMessage:
    """Run the node's whole answering path on one request; return what it would send."""
    await node.open_source()
    queue: asyncio.Queue[federation_pb2.NodeMessage | None] = asyncio.Queue()
    node.connection.outgoing = queue
    await node.answering.answer(signed)
    message = queue.get_nowait()
    assert message is not None
    return message


def result_for(request: RequestSpec, request_bytes: bytes, carrier_id: str) -> bytes:
    """A carrier's serialized result for ``request``: one released member-months cell."""
    query = request.queries[0]
    table = QueryTable(
        metric=query.metric,
        version=query.version,
        group_by=(),
        cells=(
            CellResult(
                key=(),
                stats=(
                    StatValue("member_months", Status.RELEASED, 1200),
                    StatValue("members", Status.RELEASED, 100),
                ),
            ),
        ),
        disclosure=DisclosureSummary(min_cell_size=11, cells_released=1),
    )
    spec = ResultSpec(
        request_id=request.request_id,
        round_id=request.round_id,
        carrier_id=carrier_id,
        catalogue_version=request.catalogue_version,
        tables=(table,),
        request_digest=wire.digest(request_bytes),
        data_snapshot="snap-" + carrier_id,
    )
    return wire.result_to_pb(spec).SerializeToString()
