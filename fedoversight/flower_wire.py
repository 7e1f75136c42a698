"""How fedoversight's messages ride on Flower (the ``flower`` extra; see docs/flower.md).

Both Flower apps — the ServerApp (:mod:`coordinator.flower`) and the ClientApp shim
(:mod:`carrier_node.flower`) — put the federation's own protobuf messages, as bytes, in one
record of each Flower ``Message``; nothing else travels. This module holds that layout only, so
both sides agree on it without importing each other (or Flower).

- ``query.hello`` (ServerApp → each SuperNode): an empty record; the reply's record holds
  ``hello``, a serialized ``Hello`` naming the carrier the node answers for (as on the native
  stream: unauthenticated; what a carrier sends is trusted only once signed).
- ``query`` (ServerApp → a carrier's SuperNode): ``signed_request``, the ``SignedRequest`` the
  operator key signed; the reply holds ``node_message``, the node's ``NodeMessage`` answer (a
  signed ``result`` or a ``refusal``), exactly as the node would send it on its stream.
- ``query.ack`` (ServerApp → the SuperNode, once the result is stored): ``request_id``; the
  node forgets the answer kept in its outbox, as after the native ``Ack``.
"""

from __future__ import annotations

#: The one record of every message, in the Message's ``RecordDict``.
RECORD = "fedoversight"

#: Message types (Flower's ``query`` category and actions of it).
QUERY = "query"
HELLO = "query.hello"
ACK = "query.ack"

#: Keys of the record's values (each bytes, or a str for ``request_id``).
SIGNED_REQUEST = "signed_request"
NODE_MESSAGE = "node_message"
HELLO_MESSAGE = "hello"
REQUEST_ID = "request_id"

#: The SuperNode's ``node_config`` key naming the carrier's ``node.toml``.
NODE_CONFIG_KEY = "node-config"
