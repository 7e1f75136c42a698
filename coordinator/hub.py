"""The node-facing service: one long-lived stream per connected carrier node."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from coordinator.access import CarrierAccess
from coordinator.monitoring import CoordinatorMetrics
from fedoversight import catalogue
from fedoversight.dimensions import Dimension, accepts
from fedoversight.logs import bind_log_fields
from fedoversight.v1 import federation_pb2, federation_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

#: Most metric names a hello may list (the catalogue has a few dozen).
MAX_HELLO_METRICS = 500


class HubListener(Protocol):
    async def on_connect(self, carrier_id: str) -> None: ...

    async def on_disconnect(self, carrier_id: str) -> None: ...

    async def on_result(self, carrier_id: str, result: types_pb2.SignedResult) -> None: ...

    async def on_refusal(self, carrier_id: str, refusal: types_pb2.Refusal) -> None: ...


class Registry(Protocol):
    def is_registered(self, carrier_id: str) -> bool: ...

    def register(self, carrier_id: str) -> None: ...


@dataclass
class Session:
    carrier_id: str
    catalogue_version: str
    node_version: str
    metrics: tuple[str, ...]
    #: Serial (hex) of the certificate the stream was opened with ("" without TLS).
    certificate_serial: str = ""
    queue: asyncio.Queue[federation_pb2.CoordinatorMessage | None] = field(
        default_factory=asyncio.Queue
    )
    connected_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    last_seen: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class NodeHub(federation_pb2_grpc.NodeFederationServicer):
    def __init__(
        self,
        registry: Registry,
        *,
        coordinator_id: str,
        heartbeat_seconds: int,
        hello_timeout: float,
        auto_register: bool,
        access: CarrierAccess,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._coordinator_id = coordinator_id
        self._heartbeat_seconds = heartbeat_seconds
        self._hello_timeout = hello_timeout
        self._auto_register = auto_register
        self._access = access
        self.sessions: dict[str, Session] = {}
        self.listener: HubListener | None = None

    def is_connected(self, carrier_id: str) -> bool:
        return carrier_id in self.sessions

    def send(self, carrier_id: str, message: federation_pb2.CoordinatorMessage) -> bool:
        session = self.sessions.get(carrier_id)
        if session is None:
            return False
        session.queue.put_nowait(message)
        return True

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.queue.put_nowait(None)

    def _count_refused(self) -> None:
        if self._metrics is not None:
            self._metrics.carrier_streams_refused.inc()

    @staticmethod
    def _refusal(text: str) -> federation_pb2.CoordinatorMessage:
        return federation_pb2.CoordinatorMessage(
            refusal=types_pb2.Refusal(
                code=types_pb2.ERROR_CODE_UNAUTHENTICATED, public_message=text
            )
        )

    def _check_hello(
        self, hello: federation_pb2.Hello, context: grpc.aio.ServicerContext
    ) -> str | None:
        """None when the hello is acceptable, else the public reason for refusing it."""
        carrier_id = hello.carrier_id
        if not accepts(Dimension.CARRIER, carrier_id):
            return "carrier id not of the expected form"
        identity = self._access.refusal(carrier_id, context)
        if identity is not None:
            return identity
        if hello.catalogue_version != catalogue.CATALOGUE_VERSION:
            return "catalogue version not supported"
        if (
            len(hello.node_version) > 64
            or len(hello.metrics) > MAX_HELLO_METRICS
            or any(len(m) > 80 for m in hello.metrics)
        ):
            return "hello not of the expected form"
        if not self._registry.is_registered(carrier_id):
            if not self._auto_register:
                return "unknown carrier"
            self._registry.register(carrier_id)
        return None

    async def Connect(
        self,
        request_iterator: AsyncIterator[federation_pb2.NodeMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[federation_pb2.CoordinatorMessage]:
        try:
            first = await asyncio.wait_for(anext(request_iterator), timeout=self._hello_timeout)
        except (TimeoutError, StopAsyncIteration):
            self._count_refused()
            yield self._refusal("expected a hello")
            return
        if first.WhichOneof("body") != "hello":
            self._count_refused()
            yield self._refusal("expected a hello")
            return
        reason = self._check_hello(first.hello, context)
        if reason is not None:
            claimed = (
                first.hello.carrier_id
                if accepts(Dimension.CARRIER, first.hello.carrier_id)
                else "?"
            )
            log.warning(
                "refused a node stream claiming carrier %s: %s",
                claimed,
                reason,
                extra={"carrier_id": claimed if claimed != "?" else ""},
            )
            self._count_refused()
            yield self._refusal(reason)
            return
        hello = first.hello
        # This stream's task (and the reader it starts) logs with the carrier's id.
        bind_log_fields(carrier_id=hello.carrier_id)
        session = Session(
            carrier_id=hello.carrier_id,
            catalogue_version=hello.catalogue_version,
            node_version=hello.node_version,
            metrics=tuple(hello.metrics),
            certificate_serial=self._access.serial(context),
        )
        previous = self.sessions.get(session.carrier_id)
        if previous is not None:
            previous.queue.put_nowait(None)  # the newer stream replaces the older one
        self.sessions[session.carrier_id] = session
        log.info("carrier %s connected", session.carrier_id)
        yield federation_pb2.CoordinatorMessage(
            welcome=federation_pb2.Welcome(
                coordinator_id=self._coordinator_id, heartbeat_seconds=self._heartbeat_seconds
            )
        )
        if self.listener is not None:
            await self.listener.on_connect(session.carrier_id)
        reader = asyncio.create_task(self._read(session, request_iterator))
        # The stream ends when the node's side does (or its certificate is revoked): the
        # reader's end is queued behind what is already queued (no task per message sent).
        reader.add_done_callback(lambda _: session.queue.put_nowait(None))
        try:
            while (message := await session.queue.get()) is not None:
                yield message
        finally:
            reader.cancel()
            if self.sessions.get(session.carrier_id) is session:
                del self.sessions[session.carrier_id]
                log.info("carrier %s disconnected", session.carrier_id)
                if self.listener is not None:
                    await self.listener.on_disconnect(session.carrier_id)

    async def _read(
        self, session: Session, request_iterator: AsyncIterator[federation_pb2.NodeMessage]
    ) -> None:
        try:
            async for message in request_iterator:
                session.last_seen = dt.datetime.now(dt.UTC)
                if session.certificate_serial and self._access.is_revoked(
                    session.certificate_serial
                ):
                    log.warning(
                        "closing the stream of %s: its certificate was revoked", session.carrier_id
                    )
                    return
                body = message.WhichOneof("body")
                if self.listener is None:
                    continue
                if body == "result":
                    await self.listener.on_result(session.carrier_id, message.result)
                elif body == "refusal":
                    await self.listener.on_refusal(session.carrier_id, message.refusal)
        except grpc.aio.AioRpcError as exc:
            log.info("stream from %s ended: %s", session.carrier_id, exc.code().name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("error reading from carrier %s", session.carrier_id)
