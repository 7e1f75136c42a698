"""The node's one stream to the coordinator: dialled out (the node never listens), over mutual
TLS, reconnected with jittered exponential backoff, with heartbeats while it is up.

Outgoing messages are queued and written in order; incoming ones are handed to the daemon's
callbacks: requests (answered concurrently), acknowledgements (the outbox may forget an
answer) and the welcome (the outbox is sent again after every reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from carrier_node.config import NodeConfig
from fedoversight.errors import ConfigError, OversightError
from fedoversight.tls import check_identity_files, describe_handshake_failure
from fedoversight.v1 import federation_pb2, federation_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

#: Called with every message the node puts on the wire (tests record them; audits could too).
WireTap = Callable[[federation_pb2.NodeMessage], None]


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class Connection:
    def __init__(
        self,
        config: NodeConfig,
        *,
        hello: Callable[[], federation_pb2.Hello],
        on_welcome: Callable[[], Awaitable[None]],
        on_request: Callable[[types_pb2.SignedRequest], None],
        on_ack: Callable[[str], Awaitable[None]],
        wiretap: WireTap | None = None,
    ) -> None:
        """``hello``: what the node says of itself on connecting; ``on_welcome``: run once the
        coordinator has accepted the node (it sends the outbox again); ``on_request``: called
        with each signed request (it must not block); ``on_ack``: with each acknowledged
        request id."""
        self.config = config
        self.wiretap = wiretap
        #: The queue of the stream up now (None while disconnected).
        self.outgoing: asyncio.Queue[federation_pb2.NodeMessage | None] | None = None
        self.connected = asyncio.Event()
        self._hello = hello
        self._on_welcome = on_welcome
        self._on_request = on_request
        self._on_ack = on_ack
        #: Whether the coordinator welcomed the node on the stream up now (or the last one).
        self._welcomed = False
        self._call: (
            grpc.aio.StreamStreamCall[federation_pb2.NodeMessage, federation_pb2.CoordinatorMessage]
            | None
        ) = None

    def send(self, message: federation_pb2.NodeMessage) -> None:
        """Queue ``message`` on the stream up now; while disconnected it is dropped (answers
        are in the outbox, which is sent again on the next connection)."""
        if self.outgoing is not None:
            self.outgoing.put_nowait(message)

    async def run(self, stopping: asyncio.Event) -> None:
        """Connect, serve the stream, reconnect, until ``stopping`` is set."""
        delay = self.config.reconnect_min_seconds
        while not stopping.is_set():
            self._welcomed = False
            try:
                await self._session()
            except asyncio.CancelledError:
                if stopping.is_set():  # close() cancelled the call: a clean exit
                    break
                raise
            except grpc.aio.AioRpcError as exc:
                self._log_stream_end(exc, self._welcomed)
            except OversightError as exc:
                log.error("cannot connect: %s", exc.detail)
            finally:
                self.connected.clear()
            if stopping.is_set():
                break
            # A stream the coordinator had welcomed starts the backoff again, however it ended.
            delay = (
                self.config.reconnect_min_seconds
                if self._welcomed
                else min(delay * 2, self.config.reconnect_max_seconds)
            )
            wait = delay * random.uniform(0.5, 1.0)
            log.info("reconnecting in %.1fs", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=wait)

    def close(self) -> None:
        """End the stream up now (the daemon is stopping)."""
        if self.outgoing is not None:
            self.outgoing.put_nowait(None)
        if self._call is not None:
            self._call.cancel()

    def _log_stream_end(self, exc: grpc.aio.AioRpcError, welcomed: bool) -> None:
        details = exc.details() or ""
        code = exc.code()
        if code is grpc.StatusCode.UNAVAILABLE and welcomed:
            # The handshake succeeded on this stream: the coordinator went away (a restart,
            # a crash, the network), nothing to do with this node's certificate.
            log.warning("the coordinator went away (%s); reconnecting", code.name)
            return
        if code is grpc.StatusCode.UNAVAILABLE and self.config.tls is not None:
            reason = describe_handshake_failure(details)
            if reason is None and "socket closed" in details.lower():
                reason = (
                    "the coordinator closed the connection while it was being set up: it"
                    " probably refused this node's certificate (unknown CA, expired or"
                    " revoked; the coordinator's log names the reason)"
                )
            if reason is not None:
                log.error("TLS with the coordinator failed: %s", reason)
                return
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            log.error("the stream ended: a message exceeded the size limit")
            return
        log.warning("stream to coordinator ended: %s", code.name)

    def _channel(self) -> grpc.aio.Channel:
        options = channel_options(self.config.max_message_bytes)
        tls = self.config.tls
        if tls is None:
            if not self.config.insecure:
                raise OversightError("no TLS configured")
            return grpc.aio.insecure_channel(self.config.coordinator, options=options)
        # This side's identity first: an expired certificate or a key that does not match is
        # named here rather than left to a failed handshake.
        check_identity_files(Path(tls.cert), Path(tls.key), what="this node's")
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(tls.ca_cert).read_bytes(),
                private_key=Path(tls.key).read_bytes(),
                certificate_chain=Path(tls.cert).read_bytes(),
            )
        except OSError as exc:
            raise ConfigError(f"cannot read TLS file: {exc.strerror}") from exc
        if tls.server_name:
            options = [*options, ("grpc.ssl_target_name_override", tls.server_name)]  # type: ignore[list-item]
        return grpc.aio.secure_channel(self.config.coordinator, credentials, options=options)

    async def _outgoing_iter(
        self, queue: asyncio.Queue[federation_pb2.NodeMessage | None]
    ) -> AsyncIterator[federation_pb2.NodeMessage]:
        while True:
            message = await queue.get()
            if message is None:
                return
            if self.wiretap is not None:
                self.wiretap(message)
            yield message

    async def _session(self) -> bool:
        """One stream, until it ends; whether the coordinator welcomed the node on it."""
        queue: asyncio.Queue[federation_pb2.NodeMessage | None] = asyncio.Queue()
        self.outgoing = queue
        welcomed = False
        async with self._channel() as channel:
            stub = federation_pb2_grpc.NodeFederationStub(channel)
            call = stub.Connect(self._outgoing_iter(queue), timeout=self.config.stream_max_seconds)
            self._call = call
            queue.put_nowait(federation_pb2.NodeMessage(hello=self._hello()))
            heartbeat: asyncio.Task[None] | None = None
            try:
                async for message in call:
                    body = message.WhichOneof("body")
                    if body == "welcome":
                        welcomed = self._welcomed = True
                        log.info("connected to coordinator %s", message.welcome.coordinator_id)
                        self.connected.set()
                        await self._on_welcome()
                        if heartbeat is None:
                            interval = message.welcome.heartbeat_seconds or (
                                self.config.heartbeat_seconds
                            )
                            heartbeat = asyncio.create_task(self._heartbeats(float(interval)))
                    elif body == "request":
                        self._on_request(message.request)
                    elif body == "ack":
                        await self._on_ack(message.ack.request_id)
                    elif body == "refusal":
                        log.error(
                            "coordinator refused this node: %s", message.refusal.public_message
                        )
                        await asyncio.sleep(self.config.reconnect_max_seconds)
                        return False
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                queue.put_nowait(None)
                self.outgoing = None
                self._call = None
        return welcomed

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            ts = Timestamp()
            ts.GetCurrentTime()
            self.send(federation_pb2.NodeMessage(heartbeat=federation_pb2.Heartbeat(sent_at=ts)))
