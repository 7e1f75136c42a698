"""The node's front door for requests: signature, validity window and replay, then decoding.

Nothing is evaluated before a request has passed every check here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from carrier_node.records.state import NodeState
from fedoversight import wire
from fedoversight.domain import RequestSpec
from fedoversight.errors import AuthenticationError, InvalidRequestError, OversightError
from fedoversight.signing import Verifier
from fedoversight.v1 import types_pb2

log = logging.getLogger(__name__)

#: Clock skew tolerated between coordinator and node.
CLOCK_SKEW = dt.timedelta(minutes=5)

#: Above the largest valid request (32 queries, each filter with at most 200 short values);
#: anything bigger is refused before its signature is even checked.
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class ExpiredRequestError(AuthenticationError):
    public = "the request has expired or is not yet valid"
    code = types_pb2.ERROR_CODE_EXPIRED


class ReplayedRequestError(AuthenticationError):
    public = "the request was seen before"
    code = types_pb2.ERROR_CODE_REPLAYED


class NotAddressedError(AuthenticationError):
    public = "the request is not addressed to this carrier"
    code = types_pb2.ERROR_CODE_NOT_ADDRESSED


@dataclass(frozen=True)
class Arrival:
    """A signed request as it arrived, read once: its bytes, their digest, the message they
    parse to (None when they do not, or are too large to try) and the ids it claims ("" when
    absent or not of the expected form). Nothing here is verified yet."""

    signed: types_pb2.SignedRequest
    data: bytes
    sha256: str
    message: types_pb2.MetricRequest | None
    request_id: str
    round_id: str

    @classmethod
    def of(cls, signed: types_pb2.SignedRequest) -> Arrival:
        data = bytes(signed.request)
        message: types_pb2.MetricRequest | None = None
        request_id = round_id = ""
        if len(data) <= MAX_REQUEST_BYTES:
            message = types_pb2.MetricRequest()
            try:
                message.ParseFromString(data)
            except Exception:  # any garbage: no message, no ids
                message = None
        if message is not None:
            request_id = message.request_id if wire.ID_RE.fullmatch(message.request_id) else ""
            round_id = message.round_id if wire.ID_RE.fullmatch(message.round_id) else ""
        return cls(signed, data, hashlib.sha256(data).hexdigest(), message, request_id, round_id)


class RequestGate:
    def __init__(
        self,
        state: NodeState,
        verifier: Verifier | None,
        *,
        carrier_id: str,
        allow_unsigned: bool = False,
        max_age: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        """``carrier_id``: this node's carrier; a request that does not name it is refused."""
        if verifier is None and not allow_unsigned:
            raise AuthenticationError("no operator key configured")
        self._carrier_id = carrier_id
        self._state = state
        self._verifier = verifier
        self._allow_unsigned = allow_unsigned
        self._max_age = max_age

    def admit(
        self,
        arrival: Arrival | types_pb2.SignedRequest,
        now: dt.datetime | None = None,
        *,
        unanswered: bool = False,
    ) -> RequestSpec:
        """Verify and decode; raises an :class:`OversightError` subclass on any failure.

        ``unanswered``: the caller found no answer kept for these very bytes, so a nonce
        first seen with them is not a replay (the node admitted the request and stopped
        before answering it: it is evaluated again)."""
        if isinstance(arrival, types_pb2.SignedRequest):
            arrival = Arrival.of(arrival)
        now = now or dt.datetime.now(dt.UTC)
        signed, data = arrival.signed, arrival.data
        if len(data) > MAX_REQUEST_BYTES:
            raise InvalidRequestError("request larger than any valid request")
        if signed.signature or not self._allow_unsigned:
            if not signed.signature:
                raise AuthenticationError("the request is not signed")
            if self._verifier is None:
                raise AuthenticationError("signed request but no operator key configured")
            self._verifier.verify(data, bytes(signed.signature), signed.key_id)
        if arrival.message is None:
            raise InvalidRequestError("request bytes do not decode")
        try:
            request = wire.request_from_pb(arrival.message)
        except OversightError:
            raise
        except Exception:  # strict decoding should never get here; refuse, never crash
            log.warning("a request failed decoding unexpectedly")
            raise InvalidRequestError("request does not decode") from None
        if request.expires_at <= now or request.issued_at > now + CLOCK_SKEW:
            raise ExpiredRequestError("outside its validity window")
        if now - request.issued_at > self._max_age:
            raise ExpiredRequestError("issued too long ago")
        if self._carrier_id not in request.carriers:
            raise NotAddressedError("the request does not name this carrier")
        if not self._state.remember_nonce(
            request.nonce,
            request.request_id,
            request.expires_at,
            now,
            arrival.sha256,
            unanswered=unanswered,
        ):
            raise ReplayedRequestError("nonce seen before")
        return request
