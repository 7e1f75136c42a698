"""The project's errors, and the one place they meet gRPC status codes.

::

    OversightError
    ├── ConfigError                 invalid or missing configuration
    ├── InvalidRequestError         a request that fails decoding or validation
    │   ├── UnknownMetricError      not in the catalogue, or a version the node does not have
    │   └── PolicyRefusedError      valid, but the carrier's policy does not answer it
    │       └── RequestTooLargeError  estimated larger than the carrier's policy admits
    ├── AuthenticationError         unsigned, tampered, expired or replayed; unknown identity
    ├── DisclosureRefusedError      answering would expose a small group
    ├── DataSourceError             the carrier's data cannot be read or fails validation
    ├── NodeUnableError             the node cannot answer now (it stays up and says why)
    │   ├── DeadlineExceededError   past the request's deadline: evaluation stopped
    │   ├── NodeBusyError           its queue of waiting requests is full
    │   ├── RecordsUnavailableError its state or audit log cannot be written
    │   └── NodeStoppingError       it was shut down during the evaluation
    ├── CarrierUnavailableError     a carrier is not connected or went away mid-round
    ├── CoordinatorUnavailableError an operator's client cannot reach the coordinator
    └── RoundTimeoutError           a round ran past its deadline

Every error has a fixed public message per class (a request too large also says its estimate
and the limit: both come from the request and the carrier's policy, nothing from its data).
The detail given at construction stays in the process that raised it (logs at the node, never
the wire): a carrier's rows, member ids or SQL must never reach a message that leaves the node,
so :func:`public_message` is the only text that is ever sent.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

from fedoversight.v1 import types_pb2


class OversightError(Exception):
    """Root of every error the project raises on purpose."""

    public: ClassVar[str] = "the request could not be completed"
    code: ClassVar[int] = types_pb2.ERROR_CODE_INTERNAL
    status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.public)
        self.detail = detail or self.public


class ConfigError(OversightError):
    public = "invalid configuration"
    code = types_pb2.ERROR_CODE_INVALID_REQUEST
    status = grpc.StatusCode.FAILED_PRECONDITION


class InvalidRequestError(OversightError):
    public = "the request is malformed or not valid"
    code = types_pb2.ERROR_CODE_INVALID_REQUEST
    status = grpc.StatusCode.INVALID_ARGUMENT


class UnknownMetricError(InvalidRequestError):
    public = "the metric or metric version is not in this catalogue"
    code = types_pb2.ERROR_CODE_UNKNOWN_METRIC
    status = grpc.StatusCode.NOT_FOUND


class PolicyRefusedError(InvalidRequestError):
    public = "the carrier's policy does not answer this request"
    code = types_pb2.ERROR_CODE_POLICY_REFUSED
    status = grpc.StatusCode.PERMISSION_DENIED


class AuthenticationError(OversightError):
    public = "the request is not authenticated"
    code = types_pb2.ERROR_CODE_UNAUTHENTICATED
    status = grpc.StatusCode.UNAUTHENTICATED


class DisclosureRefusedError(OversightError):
    public = "answering would disclose a small group"
    code = types_pb2.ERROR_CODE_DISCLOSURE_REFUSED
    status = grpc.StatusCode.PERMISSION_DENIED


class DataSourceError(OversightError):
    public = "the carrier's data source could not answer"
    code = types_pb2.ERROR_CODE_DATA_SOURCE
    status = grpc.StatusCode.UNAVAILABLE


class RequestTooLargeError(PolicyRefusedError):
    public = "the request is larger than the carrier's policy admits"
    code = types_pb2.ERROR_CODE_TOO_LARGE

    def __init__(self, estimated_cells: int, limit: int) -> None:
        super().__init__(f"estimated {estimated_cells:,} cells, above the limit of {limit:,}")
        self.estimated_cells = estimated_cells
        self.limit = limit


class NodeUnableError(OversightError):
    public = "the node cannot answer now"
    code = types_pb2.ERROR_CODE_INTERNAL
    status = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(NodeUnableError):
    public = "the node could not answer before the request's deadline; it stopped evaluating"
    code = types_pb2.ERROR_CODE_DEADLINE_EXCEEDED
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class NodeBusyError(NodeUnableError):
    public = "the node's queue of waiting requests is full; ask again later"
    code = types_pb2.ERROR_CODE_NODE_BUSY
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class RecordsUnavailableError(NodeUnableError):
    public = (
        "the node cannot write its records (state directory unwritable or full); it answers"
        " nothing until that is fixed"
    )
    code = types_pb2.ERROR_CODE_NODE_RECORDS


class NodeStoppingError(NodeUnableError):
    public = "the node was shut down during the evaluation; ask again"
    code = types_pb2.ERROR_CODE_NODE_STOPPING


class CarrierUnavailableError(OversightError):
    public = "the carrier is not available"
    code = types_pb2.ERROR_CODE_INTERNAL
    status = grpc.StatusCode.UNAVAILABLE


class CoordinatorUnavailableError(OversightError):
    """Raised on the operator's side only: the coordinator did not answer at all (no
    connection, a TLS handshake refused), as opposed to a carrier it could not reach."""

    public = "the coordinator cannot be reached"
    code = types_pb2.ERROR_CODE_INTERNAL
    status = grpc.StatusCode.UNAVAILABLE


class RoundTimeoutError(OversightError):
    public = "the round ran past its deadline"
    code = types_pb2.ERROR_CODE_INTERNAL
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(OversightError):
    public = "not found"
    code = types_pb2.ERROR_CODE_INVALID_REQUEST
    status = grpc.StatusCode.NOT_FOUND


def public_message(error: BaseException) -> str:
    """The only text about an error that may leave the process that raised it."""
    if isinstance(error, RequestTooLargeError):
        return f"{RequestTooLargeError.public} ({error.detail})"
    if isinstance(error, OversightError):
        return type(error).public
    return OversightError.public


def error_code(error: BaseException) -> int:
    """The wire ErrorCode for an error (INTERNAL for anything unexpected)."""
    if isinstance(error, OversightError):
        return type(error).code
    return types_pb2.ERROR_CODE_INTERNAL


def grpc_status(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, OversightError):
        return type(error).status
    return grpc.StatusCode.INTERNAL


_BY_STATUS: dict[grpc.StatusCode, type[OversightError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.PERMISSION_DENIED: PolicyRefusedError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.UNAVAILABLE: CarrierUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RoundTimeoutError,
    grpc.StatusCode.FAILED_PRECONDITION: ConfigError,
}


def from_rpc_error(error: grpc.RpcError) -> OversightError:
    """Translate a gRPC failure seen by a client into the project's error tree."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    cls = _BY_STATUS.get(code, OversightError) if code is not None else OversightError
    return cls(str(details or cls.public))
