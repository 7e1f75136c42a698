"""The Flower ClientApp shim: a SuperNode hands each signed request to this carrier's node.

Needs the ``flower`` extra (``pip install "fedoversight[flower]"``). The shim holds no oversight
logic: for each ``query`` message it starts the carrier's own node daemon from the carrier's
``node.toml`` (the SuperNode's ``node_config`` names it: ``--node-config
"node-config='/etc/fedoversight/node.toml'"``), answers the signed request exactly as the
daemon answers one from its stream (:meth:`~carrier_node.daemon.NodeDaemon.answer_here`: the
gate's signature, validity, address and replay checks, the carrier's policy, the engine,
disclosure control, signing, the audit log and the outbox, all from the carrier's installed
version and keys), and returns the node's answer bytes. The message layout is
:mod:`fedoversight.flower_wire`; what Flower does and does not guarantee is in docs/flower.md.

In Flower's simulation runtime nodes have no ``node_config`` of their own, only a partition
id: :func:`make_client_app` then takes the ``node.toml`` of each partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from carrier_node.config import load_node_config
from carrier_node.daemon import NODE_VERSION, NodeDaemon
from fedoversight import catalogue, flower_wire
from fedoversight.errors import ConfigError, OversightError
from fedoversight.logs import log_fields
from fedoversight.v1 import federation_pb2, types_pb2

log = logging.getLogger(__name__)

#: Flower's error code of a reply that carries no answer (beside its own codes, below 1000).
NO_ANSWER = 4100

__all__ = ["answer", "client_app", "make_client_app"]


def node_toml(context: Context, partitions: Mapping[int, Path] | None = None) -> Path:
    """The carrier's ``node.toml``: from the SuperNode's ``node_config``, or (simulation) the
    one given for the node's partition."""
    configured = context.node_config.get(flower_wire.NODE_CONFIG_KEY)
    if isinstance(configured, str) and configured:
        return Path(configured)
    partition = context.node_config.get("partition-id")
    if partitions is not None and isinstance(partition, int) and partition in partitions:
        return partitions[partition]
    raise ConfigError(
        f"the SuperNode's node_config names no node.toml: start it with --node-config"
        f" \"{flower_wire.NODE_CONFIG_KEY}='/path/to/node.toml'\""
    )


async def answer(config_path: Path, signed: types_pb2.SignedRequest) -> federation_pb2.NodeMessage:
    """The node's answer to one signed request: the daemon started from ``config_path``
    without its stream, the request answered, the daemon stopped (its records closed)."""
    node = NodeDaemon(load_node_config(config_path))
    try:
        with log_fields(carrier_id=node.config.carrier_id):
            await node.start_here()
            message = await node.answer_here(signed)
    finally:
        await node.shutdown()
    if message is None:
        raise OversightError("the result is held for the carrier's reviewer")
    return message


async def _forget(config_path: Path, request_id: str) -> None:
    node = NodeDaemon(load_node_config(config_path))
    try:
        await node.forget(request_id)
    finally:
        await node.shutdown()


def _hello(config_path: Path) -> federation_pb2.Hello:
    config = load_node_config(config_path)
    return federation_pb2.Hello(
        carrier_id=config.carrier_id,
        catalogue_version=catalogue.CATALOGUE_VERSION,
        node_version=NODE_VERSION,
    )


def _reply(message: Message, values: Mapping[str, bytes | str]) -> Message:
    return Message(RecordDict({flower_wire.RECORD: ConfigRecord(dict(values))}), reply_to=message)


def _failed(message: Message, exc: Exception) -> Message:
    """A reply without an answer: the error's fixed public text only (its detail, which may
    name the carrier's paths, stays in the node's log)."""
    detail = exc.detail if isinstance(exc, OversightError) else type(exc).__name__
    log.warning("%s not answered: %s", message.metadata.message_type, detail)
    public = exc.public if isinstance(exc, OversightError) else OversightError.public
    return Message(Error(code=NO_ANSWER, reason=public), reply_to=message)


def make_client_app(partitions: Mapping[int, Path] | None = None) -> ClientApp:
    """The shim as a Flower ClientApp; ``partitions``: each simulated node's ``node.toml`` by
    partition id (Flower's simulation runtime), unused where ``node_config`` names one."""
    app = ClientApp()

    def query(message: Message, context: Context) -> Message:
        try:
            record = message.content[flower_wire.RECORD]
            signed = types_pb2.SignedRequest.FromString(
                bytes(record[flower_wire.SIGNED_REQUEST])  # type: ignore[arg-type, unused-ignore]
            )
            answered = asyncio.run(answer(node_toml(context, partitions), signed))
        except Exception as exc:
            return _failed(message, exc)
        return _reply(message, {flower_wire.NODE_MESSAGE: answered.SerializeToString()})

    def hello(message: Message, context: Context) -> Message:
        try:
            said = _hello(node_toml(context, partitions))
        except Exception as exc:
            return _failed(message, exc)
        return _reply(message, {flower_wire.HELLO_MESSAGE: said.SerializeToString()})

    def ack(message: Message, context: Context) -> Message:
        try:
            request_id = str(message.content[flower_wire.RECORD][flower_wire.REQUEST_ID])
            asyncio.run(_forget(node_toml(context, partitions), request_id))
        except Exception as exc:
            return _failed(message, exc)
        return _reply(message, {flower_wire.REQUEST_ID: request_id})

    app.query()(query)
    app.query("hello")(hello)
    app.query("ack")(ack)
    return app


#: What the app bundle names (``carrier_node.flower:client_app``).
client_app = make_client_app()
