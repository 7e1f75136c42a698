"""Receipts: each carrier's signed result, checked on arrival and re-checkable at any time.

A receipt is the exact bytes of a ``MetricResult`` as the node signed them, with its signature
and key id, stored beside the round's signed request. The result names the request it answers
(id and SHA-256 of the request bytes), each table's metric and version, and the description of
the data snapshot it was computed on; so a valid receipt proves what that carrier answered to
what it was asked. :func:`verify_round` re-checks every stored receipt of a round
(``oversight round verify ROUND``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coordinator.store import CarrierRoundState, KeptReceipt, RoundStore, StoredResult
from fedoversight import wire
from fedoversight.catalogue import get_metric
from fedoversight.domain import RequestSpec, ResultSpec
from fedoversight.errors import AuthenticationError, InvalidRequestError, OversightError
from fedoversight.signing import Verifier
from fedoversight.v1 import types_pb2


def check_result_shape(request: RequestSpec, result: ResultSpec) -> None:
    """A result answers each query of its request, with only declared statistics."""
    if len(result.tables) != len(request.queries):
        raise InvalidRequestError("result does not answer every query")
    for query, table in zip(request.queries, result.tables, strict=True):
        if (table.metric, table.version, table.group_by) != (
            query.metric,
            query.version,
            query.group_by,
        ):
            raise InvalidRequestError("result table does not match its query")
        declared = {s.name for s in get_metric(query.metric, query.version).statistics}
        for cell in table.cells:
            if tuple(d for d, _ in cell.key) != query.group_by:
                raise InvalidRequestError("cell keys do not match the grouping")
            if any(s.name not in declared for s in cell.stats):
                raise InvalidRequestError("cell carries an undeclared statistic")


def verify_result(
    carrier_id: str,
    result_bytes: bytes,
    signature: bytes,
    key_id: str,
    *,
    verifier: Verifier | None,
    require_signature: bool,
    request_bytes: bytes | None = None,
    request: RequestSpec | None = None,
) -> ResultSpec:
    """Check one result: the carrier's signature first, then what it says it answers.

    With ``request_bytes`` (and optionally the decoded ``request``), the result must answer
    exactly that request: same id and round, the request's digest, one table per query.
    Raises :class:`~fedoversight.errors.OversightError` naming the first problem.
    """
    if verifier is not None:
        if not signature:
            raise AuthenticationError("the result is not signed")
        verifier.verify(result_bytes, signature, key_id)
    elif require_signature:
        raise AuthenticationError("no result key configured for this carrier")
    result = wire.decode_result_bytes(result_bytes)
    if result.carrier_id != carrier_id:
        raise AuthenticationError("result names another carrier")
    if request_bytes is not None:
        check_answers(result, request_bytes, request)
    return result


def check_answers(
    result: ResultSpec,
    request_bytes: bytes,
    request: RequestSpec | None = None,
    request_digest: bytes | None = None,
) -> None:
    """The result answers exactly this request: its id and round, its digest, its queries.
    ``request_digest``: ``wire.digest(request_bytes)`` when the caller holds it already."""
    request = request or wire.decode_request_bytes(request_bytes)
    if result.request_id != request.request_id or result.round_id != request.round_id:
        raise InvalidRequestError("result answers another request")
    if result.request_digest != (request_digest or wire.digest(request_bytes)):
        raise InvalidRequestError("result digest does not match the request")
    check_result_shape(request, result)


@dataclass(frozen=True)
class ReceiptCheck:
    carrier_id: str
    ok: bool
    #: Why the receipt fails ("" when it holds).
    reason: str
    key_id: str
    data_snapshot: str
    received_at: dt.datetime | None
    #: The result was deleted on expiry: what remains is its digest (hex) and signature, for
    #: the carrier's audit log or any kept copy of the bytes to be checked against
    #: (:func:`verify_kept_copy`).
    result_sha256: str = ""
    deleted: bool = False


@dataclass(frozen=True)
class RoundVerification:
    round_id: str
    #: The round's own request: signed by the operator key (when one is known).
    request_ok: bool
    request_reason: str
    receipts: tuple[ReceiptCheck, ...]

    @property
    def ok(self) -> bool:
        return self.request_ok and all(r.ok for r in self.receipts)


def verify_round(
    store: RoundStore,
    round_id: str,
    *,
    operator_verifier: Verifier | None,
    node_verifiers: Mapping[str, Verifier],
    require_signatures: bool = True,
) -> RoundVerification:
    """Re-check the round's signed request and every stored receipt (from the round store);
    of a round whose results were deleted on expiry, what remains of each receipt."""
    record = store.get_round(round_id)
    answered = [
        s.carrier_id
        for s in store.carrier_rounds(round_id)
        if s.state is CarrierRoundState.ANSWERED
    ]
    return verify_receipts(
        round_id,
        types_pb2.SignedRequest(
            request=record.request_bytes, signature=record.signature, key_id=record.key_id
        ),
        store.results(round_id),
        answered,
        operator_verifier=operator_verifier,
        node_verifiers=node_verifiers,
        require_signatures=require_signatures,
        kept=store.kept_receipts(round_id),
    )


def verify_receipts(
    round_id: str,
    signed: types_pb2.SignedRequest,
    results: Sequence[StoredResult],
    answered: Sequence[str],
    *,
    operator_verifier: Verifier | None,
    node_verifiers: Mapping[str, Verifier],
    require_signatures: bool = True,
    kept: Sequence[KeptReceipt] = (),
) -> RoundVerification:
    """Check a round's signed request and every receipt, with the auditor's own keys: the
    request signed by the operator key, each result signed by its carrier's key and answering
    exactly that request. A carrier recorded as answered without a receipt fails too.
    ``kept``: what remains of receipts whose results were deleted on expiry (each stands for
    its receipt: a digest of the expected form and a signature, marked deleted)."""
    request_bytes = bytes(signed.request)
    request_ok, request_reason = True, ""
    request: RequestSpec | None = None
    try:
        if operator_verifier is not None:
            operator_verifier.verify(request_bytes, bytes(signed.signature), signed.key_id)
        elif require_signatures:
            raise AuthenticationError("no operator key to check the request with")
        request = wire.decode_request_bytes(request_bytes)
        if request.round_id != round_id:
            raise InvalidRequestError("the request is another round's")
    except OversightError as exc:
        request_ok, request_reason = False, f"request: {exc.detail}"
    checks: list[ReceiptCheck] = []
    stored = {r.carrier_id: r for r in results}
    for carrier_id, result in sorted(stored.items()):
        try:
            spec = verify_result(
                carrier_id,
                result.result_bytes,
                result.signature,
                result.key_id,
                verifier=node_verifiers.get(carrier_id),
                require_signature=require_signatures,
                request_bytes=request_bytes if request is not None else None,
                request=request,
            )
        except OversightError as exc:
            checks.append(
                ReceiptCheck(carrier_id, False, exc.detail, result.key_id, "", result.received_at)
            )
            continue
        checks.append(
            ReceiptCheck(
                carrier_id, True, "", result.key_id, spec.data_snapshot, result.received_at
            )
        )
    for receipt in kept:
        if receipt.carrier_id in stored or receipt.late:
            continue
        stored_digest = receipt.result_sha256
        well_formed = len(stored_digest) == 64 and bool(receipt.signature)
        checks.append(
            ReceiptCheck(
                receipt.carrier_id,
                well_formed,
                "" if well_formed else "the kept digest or signature is malformed",
                receipt.key_id,
                "",
                receipt.received_at,
                result_sha256=stored_digest,
                deleted=True,
            )
        )
    checks.sort(key=lambda c: c.carrier_id)
    have = {c.carrier_id for c in checks}
    for carrier_id in answered:
        if carrier_id not in have:
            checks.append(
                ReceiptCheck(carrier_id, False, "answered but no receipt stored", "", "", None)
            )
    return RoundVerification(round_id, request_ok, request_reason, tuple(checks))


def verify_kept_copy(
    result_bytes: bytes, receipt: KeptReceipt, verifier: Verifier | None
) -> ResultSpec:
    """Check a copy of a deleted result (the carrier's audit log keeps each released result;
    an export or an auditor may too) against what the coordinator kept of its receipt: the
    bytes' SHA-256 is the kept digest and the kept signature verifies on them with the
    carrier's key."""
    if wire.digest(result_bytes).hex() != receipt.result_sha256:
        raise AuthenticationError("the copy is not the result the receipt names")
    return verify_result(
        receipt.carrier_id,
        result_bytes,
        receipt.signature,
        receipt.key_id,
        verifier=verifier,
        require_signature=verifier is not None,
    )
