"""Audit anchors: the node's audit log head, as signed into each of its results.

Every signed result carries the sequence number and hash of the last entry of the node's audit
log before the entry that records its release (``MetricResult.audit_anchor``). The coordinator
keeps every signed result, so it keeps the anchors, and cannot forge or alter one without the
node's result key. The carrier's auditor exports them (``oversight anchors``) to a JSON file
and checks the node's log against it (``carrier-node audit verify --anchors``): an entry edited
and the chain recomputed after it no longer has the anchored hash, and a log cut short lacks an
anchored entry or the release that must follow it, whatever its head file says.

The file holds each result's exact signed bytes and signature, so whoever reads it can check
every anchor with the carrier's public result key; the anchor, ids and digest listed beside
them are for people to read, and are always taken again from the signed bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from fedoversight.domain import AuditAnchor
from fedoversight.errors import AuthenticationError, InvalidRequestError
from fedoversight.signing import Verifier
from fedoversight.v1 import types_pb2

#: The ``format`` of an anchors file.
ANCHORS_FORMAT = "fedoversight-audit-anchors/1"


@dataclass(frozen=True)
class AnchoredResult:
    """One signed result and the audit anchor inside it."""

    carrier_id: str
    request_id: str
    round_id: str
    anchor: AuditAnchor
    #: SHA-256 (hex) of the signed result bytes: what the node's ``released`` entry names.
    result_sha256: str
    key_id: str
    result: bytes
    signature: bytes
    #: When the coordinator received it (ISO 8601; "" when not known).
    received_at: str = ""


def anchored_result(
    result: bytes,
    signature: bytes,
    key_id: str,
    *,
    verifier: Verifier | None,
    carrier_id: str | None = None,
    received_at: str = "",
) -> AnchoredResult | None:
    """The anchor of one signed result, its signature checked first when ``verifier`` is
    given; None for a result without an anchor (from a node that predates anchors).

    Raises :class:`~fedoversight.errors.AuthenticationError` for a bad signature or a result
    of another carrier, :class:`~fedoversight.errors.InvalidRequestError` for bytes that are
    not a result or a malformed anchor.
    """
    if verifier is not None:
        verifier.verify(result, signature, key_id)
    msg = types_pb2.MetricResult()
    try:
        msg.ParseFromString(result)
    except DecodeError:
        raise InvalidRequestError("result bytes do not decode") from None
    if carrier_id is not None and msg.carrier_id != carrier_id:
        raise AuthenticationError("result names another carrier")
    if not msg.HasField("audit_anchor"):
        return None
    if len(msg.audit_anchor.hash) != 32:
        raise InvalidRequestError("malformed audit anchor")
    return AnchoredResult(
        carrier_id=msg.carrier_id,
        request_id=msg.request_id,
        round_id=msg.round_id,
        anchor=AuditAnchor(msg.audit_anchor.seq, bytes(msg.audit_anchor.hash).hex()),
        result_sha256=hashlib.sha256(result).hexdigest(),
        key_id=key_id,
        result=result,
        signature=signature,
        received_at=received_at,
    )


def anchors_json(carrier_id: str, anchored: Iterable[AnchoredResult]) -> str:
    """The anchors file's text: one record per result, in the log's order (by anchor)."""
    records = [
        {
            "request_id": a.request_id,
            "round_id": a.round_id,
            "anchor_seq": a.anchor.seq,
            "anchor_hash": a.anchor.hash,
            "result_sha256": a.result_sha256,
            "key_id": a.key_id,
            "received_at": a.received_at,
            "result": base64.b64encode(a.result).decode(),
            "signature": a.signature.hex(),
        }
        for a in sorted(anchored, key=lambda a: (a.anchor.seq, a.result_sha256))
    ]
    document = {"format": ANCHORS_FORMAT, "carrier_id": carrier_id, "anchors": records}
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def write_anchors(path: Path, carrier_id: str, anchored: Iterable[AnchoredResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(anchors_json(carrier_id, anchored), encoding="utf-8")


def read_anchors(
    path: Path, *, verifier: Verifier | None, carrier_id: str | None = None
) -> tuple[str, list[AnchoredResult]]:
    """The carrier id and the anchored results of an anchors file, each re-read from its
    signed bytes (and its signature checked when ``verifier`` is given); with ``carrier_id``
    the file must be that carrier's.

    Raises :class:`~fedoversight.errors.InvalidRequestError` for a file that is not an anchors
    file, :class:`~fedoversight.errors.AuthenticationError` for an anchor that does not verify.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(f"cannot read anchors file {path.name}") from exc
    if not isinstance(document, dict) or document.get("format") != ANCHORS_FORMAT:
        raise InvalidRequestError(f"{path.name} is not an anchors file ({ANCHORS_FORMAT})")
    owner = document.get("carrier_id")
    records = document.get("anchors")
    if not isinstance(owner, str) or not isinstance(records, list):
        raise InvalidRequestError(f"{path.name} is not an anchors file ({ANCHORS_FORMAT})")
    if carrier_id is not None and owner != carrier_id:
        raise AuthenticationError(f"the anchors are carrier {owner}'s, not {carrier_id}'s")
    out: list[AnchoredResult] = []
    for number, record in enumerate(records, start=1):
        try:
            result = base64.b64decode(record["result"], validate=True)
            signature = bytes.fromhex(record["signature"])
            key_id = str(record["key_id"])
            received_at = str(record.get("received_at", ""))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise InvalidRequestError(f"anchor {number} of {path.name} is malformed") from exc
        try:
            anchored = anchored_result(
                result,
                signature,
                key_id,
                verifier=verifier,
                carrier_id=owner,
                received_at=received_at,
            )
        except AuthenticationError as exc:
            raise AuthenticationError(
                f"anchor {number} of {path.name} does not verify: {exc.detail}"
            ) from exc
        if anchored is None:
            raise InvalidRequestError(f"anchor {number} of {path.name} holds no anchor")
        out.append(anchored)
    return owner, out
