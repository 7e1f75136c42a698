"""What the node sends back: signed results and refusals, and the audit log's account of each.

A result names the request it answers by the digest of the request's signed bytes, the data
it was computed from by the data source's snapshot, and the audit log's head when it was signed
(its audit anchor); it is signed with the carrier's result key. A refusal carries a fixed
public message that never holds the carrier's data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from carrier_node.config import NodeConfig
from carrier_node.records.audit import JsonValue, encode_bytes
from fedoversight import catalogue, wire
from fedoversight.domain import AuditAnchor, QueryTable, RequestSpec, ResultSpec
from fedoversight.errors import OversightError, error_code, public_message
from fedoversight.signing import Signer
from fedoversight.v1 import federation_pb2, types_pb2


class ResultMaker:
    def __init__(self, config: NodeConfig, signer: Signer | None) -> None:
        """``signer``: the carrier's result key (None only in insecure demo mode)."""
        self.config = config
        self.signer = signer

    def result_message(
        self,
        request: RequestSpec,
        request_bytes: bytes,
        tables: Sequence[QueryTable],
        data_snapshot: str,
        audit_anchor: AuditAnchor,
    ) -> federation_pb2.NodeMessage:
        """The signed result of ``request`` (whose signed bytes are ``request_bytes``), carrying
        ``audit_anchor``: the audit log's head when it is signed, before the entry that records
        its release is written (so that entry must follow the anchor)."""
        result = ResultSpec(
            request_id=request.request_id,
            round_id=request.round_id,
            carrier_id=self.config.carrier_id,
            catalogue_version=catalogue.CATALOGUE_VERSION,
            tables=tuple(tables),
            request_digest=wire.digest(request_bytes),
            data_snapshot=data_snapshot,
            audit_anchor=audit_anchor,
        )
        data = wire.result_to_pb(result).SerializeToString()
        if len(data) > self.config.max_message_bytes - 1024:
            raise OversightError("result larger than the message limit")
        signature, key_id = b"", ""
        if self.signer is not None:
            signature, key_id = self.signer.sign(data), self.signer.key_id
        return federation_pb2.NodeMessage(
            result=types_pb2.SignedResult(result=data, signature=signature, key_id=key_id)
        )


def refusal(request_id: str, round_id: str, exc: BaseException) -> federation_pb2.NodeMessage:
    """The refusal sent for ``exc``: its code and fixed public message only."""
    return federation_pb2.NodeMessage(
        refusal=types_pb2.Refusal(
            request_id=request_id,
            round_id=round_id,
            code=error_code(exc),  # type: ignore[arg-type]
            public_message=public_message(exc),
        )
    )


def released_entry(
    result: types_pb2.SignedResult,
    *,
    request_sha256: str,
    data_snapshot: str,
    tables: Sequence[QueryTable],
    period: str,
    queries: list[JsonValue],
) -> dict[str, JsonValue]:
    """The fields of a ``released`` audit entry (auto or approved)."""
    return {
        "result_sha256": hashlib.sha256(result.result).hexdigest(),
        "request_sha256": request_sha256,
        "signature": bytes(result.signature).hex(),
        "key_id": result.key_id,
        "data_snapshot": data_snapshot,
        "tables": [table_summary(t) for t in tables],
        "period": period,
        "queries": queries,
        "result": encode_bytes(bytes(result.result)),
    }


def purpose_entry(request: RequestSpec) -> JsonValue:
    """The request's declared purpose as the audit log records it (None when it has none)."""
    if request.purpose is None:
        return None
    return dict[str, JsonValue](request.purpose.describe())


def table_summary(table: QueryTable) -> dict[str, JsonValue]:
    """What the audit log says of one released (or held) table."""
    d = table.disclosure
    return {
        "metric": table.metric,
        "version": table.version,
        "cells": len(table.cells),
        "released": d.cells_released,
        "withheld": d.cells_withheld,
        "partly_withheld": d.cells_partly_withheld,
        "perturbed": d.cells_perturbed,
        "method": str(d.method),
        "withheld_statistics": {str(reason): n for reason, n in d.withheld},
        "policy_digest": d.policy_digest,
    }
