"""The Flower ServerApp: one fedoversight round through a Flower SuperLink and its SuperNodes.

Needs the ``flower`` extra (``pip install "fedoversight[flower]"``). Flower is only the
transport: the round is the coordinator's own. The request is built and signed with the
operator key by :class:`~coordinator.rounds.RoundManager` exactly as the coordinator does; the
round's lifecycle (states, quorum, deadline), the verification of each signed result against
its carrier's key and its request (:mod:`coordinator.receipts`), the round store
(:mod:`coordinator.store`), the tables (:mod:`coordinator.results`, :mod:`coordinator.combine`)
and the export (:mod:`coordinator.export`) are the coordinator's code. Where the coordinator
has its node hub, this app has a :class:`FlowerLink`: the manager's messages to a carrier
become Flower messages to that carrier's SuperNode (:mod:`fedoversight.flower_wire`), and the
replies come back to the manager as results and refusals.

Settings come from the coordinator's TOML (``coordinator-config`` in the run config: its
operator key, carriers and their result keys, round store) and the run config's round:
``period``, ``metrics`` (comma-separated), ``by``, ``carriers`` (default: every configured
carrier whose node said hello), ``quorum``, ``deadline`` (seconds), ``output`` (an export
file). docs/flower.md has a worked example.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from flwr.app import ConfigRecord, ConfigRecordValues, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from coordinator.client import RoundOutcome
from coordinator.config import CoordinatorConfig, load_coordinator_config
from coordinator.export import write_export
from coordinator.rounds import RoundManager
from coordinator.server import load_result_keys
from coordinator.store import CarrierRoundState, open_round_store
from fedoversight import flower_wire
from fedoversight.domain import QuerySpec
from fedoversight.errors import ConfigError, InvalidRequestError
from fedoversight.periods import Period
from fedoversight.signing import Signer, Verifier
from fedoversight.v1 import federation_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often replies are pulled from the SuperLink while a round is open.
PULL_SECONDS = 0.2

__all__ = ["FlowerLink", "RoundSettings", "make_server_app", "run_round", "server_app"]


@dataclasses.dataclass(frozen=True)
class RoundSettings:
    """One round through Flower."""

    #: The coordinator's settings: operator key, carriers and result keys, round store.
    config: CoordinatorConfig
    period: Period
    queries: tuple[QuerySpec, ...]
    #: Carriers asked (empty: every configured carrier whose node said hello).
    carriers: tuple[str, ...] = ()
    quorum: int = 0
    deadline_seconds: int = 300
    #: Where to write the round's export (.csv, .parquet, .json), if anywhere.
    output: Path | None = None
    #: How long to wait for the SuperNodes to say which carrier each answers for.
    hello_seconds: float = 60.0
    #: How many SuperNodes to wait for before asking who they are (0: the carriers asked, or
    #: every configured carrier).
    expected_nodes: int = 0
    #: Called with the finished round (tests, benchmarks).
    on_outcome: Callable[[RoundOutcome], None] | None = None


def settings_from_run_config(run_config: Mapping[str, object]) -> RoundSettings:
    """A round from Flower's run config (``flwr run --run-config``)."""
    from coordinator.cli import parse_queries  # the operator CLI's own parsing

    def text(key: str, default: str = "") -> str:
        value = run_config.get(key, default)
        return str(value)

    path = text("coordinator-config")
    if not path:
        raise ConfigError("the run config names no coordinator-config (the coordinator TOML)")
    config = load_coordinator_config(Path(path))
    output = text("output")
    return RoundSettings(
        config=config,
        period=Period.parse(text("period")),
        queries=tuple(parse_queries(text("metrics"), text("by"))),
        carriers=tuple(c for c in text("carriers").split(",") if c),
        quorum=int(text("quorum", "0")),
        deadline_seconds=int(text("deadline", "300")),
        output=Path(output) if output else None,
    )


class FlowerLink:
    """The round manager's link to the carriers (in place of the node hub): each carrier is
    a SuperNode (by node id), messages to it are Flower messages, pushed and pulled on one
    thread (the Grid is not shared between threads)."""

    def __init__(self, grid: Grid, nodes: Mapping[str, int], ttl: float) -> None:
        self._grid = grid
        self._nodes = dict(nodes)
        self._ttl = ttl
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flower-grid")
        self._outgoing: list[Message] = []
        #: Flower message id → (carrier, message type) of each message awaiting its reply.
        self._waiting: dict[str, tuple[str, str]] = {}
        self.manager: RoundManager | None = None

    def is_connected(self, carrier_id: str) -> bool:
        return carrier_id in self._nodes

    def send(self, carrier_id: str, message: federation_pb2.CoordinatorMessage) -> bool:
        node = self._nodes.get(carrier_id)
        if node is None:
            return False
        kind = message.WhichOneof("body")
        if kind == "request":
            values: dict[str, ConfigRecordValues] = {
                flower_wire.SIGNED_REQUEST: message.request.SerializeToString()
            }
            message_type = flower_wire.QUERY
        elif kind == "ack":
            values = {flower_wire.REQUEST_ID: message.ack.request_id}
            message_type = flower_wire.ACK
        else:  # heartbeats, welcome: nothing of the stream's own upkeep travels on Flower
            return True
        self._outgoing.append(
            Message(
                RecordDict({flower_wire.RECORD: ConfigRecord(values)}),
                dst_node_id=node,
                message_type=message_type,
                ttl=self._ttl,
            )
        )
        return True

    async def _grid_call(self, call: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: call(*args))

    async def pump(self) -> None:
        """Push what is queued, pull replies, hand them to the manager; until cancelled."""
        carriers = {node: carrier for carrier, node in self._nodes.items()}
        while True:
            if self._outgoing:
                batch, self._outgoing = self._outgoing, []
                ids = list(await self._grid_call(self._grid.push_messages, batch))
                for sent, message_id in zip(batch, ids, strict=True):
                    carrier = carriers[sent.metadata.dst_node_id]
                    self._waiting[message_id] = (carrier, sent.metadata.message_type)
            if self._waiting:
                replies = list(await self._grid_call(self._grid.pull_messages, list(self._waiting)))
                for reply in replies:
                    waited = self._waiting.pop(reply.metadata.reply_to_message_id, None)
                    if waited is not None:
                        await self._received(*waited, reply)
            await asyncio.sleep(PULL_SECONDS)

    async def _received(self, carrier_id: str, message_type: str, reply: Message) -> None:
        manager = self.manager
        if manager is None or message_type != flower_wire.QUERY:
            return  # an acknowledgement's reply says nothing the round needs
        if reply.has_error():
            # The shim could not answer (its node could not start, or failed): as if the
            # node's stream dropped — the round goes on without it after the grace period.
            log.warning(
                "%s: the ClientApp replied with an error (%s)", carrier_id, reply.error.code
            )
            await manager.on_disconnect(carrier_id)
            return
        try:
            data = bytes(reply.content[flower_wire.RECORD][flower_wire.NODE_MESSAGE])  # type: ignore[arg-type, unused-ignore]
            answer = federation_pb2.NodeMessage.FromString(data)
        except Exception:
            log.warning("%s: a reply without a node answer", carrier_id)
            await manager.on_disconnect(carrier_id)
            return
        kind = answer.WhichOneof("body")
        if kind == "result":
            await manager.on_result(carrier_id, answer.result)
        elif kind == "refusal":
            await manager.on_refusal(carrier_id, answer.refusal)
        else:
            log.warning("%s: an answer of unexpected kind %s", carrier_id, kind)

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def discover(grid: Grid, carriers: Iterable[str], expected: int, timeout: float) -> dict[str, int]:
    """Which SuperNode answers for which carrier (``query.hello``), among the carriers the
    coordinator knows. Waits for ``expected`` nodes to be connected (at most ``timeout``)."""
    known = set(carriers)
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    nodes = sorted(grid.get_node_ids())
    asks = [
        Message(
            RecordDict({flower_wire.RECORD: ConfigRecord({})}),
            dst_node_id=node,
            message_type=flower_wire.HELLO,
        )
        for node in nodes
    ]
    found: dict[str, int] = {}
    left = max(1.0, deadline - time.monotonic())
    for reply in grid.send_and_receive(asks, timeout=left):
        if reply.has_error():
            log.warning("node %s did not say hello (%s)", reply.metadata.src_node_id, reply.error)
            continue
        data = bytes(reply.content[flower_wire.RECORD][flower_wire.HELLO_MESSAGE])  # type: ignore[arg-type, unused-ignore]
        hello = federation_pb2.Hello.FromString(data)
        carrier = hello.carrier_id
        if carrier not in known:
            log.warning(
                "node %s answers for %r, not a known carrier", reply.metadata.src_node_id, carrier
            )
        elif carrier in found:
            log.warning("two nodes answer for %s: the first one kept", carrier)
        else:
            found[carrier] = reply.metadata.src_node_id
    return found


async def _run_round(grid: Grid, settings: RoundSettings, nodes: Mapping[str, int]) -> RoundOutcome:
    config = settings.config
    signer = Signer.load(config.operator_signing_key) if config.operator_signing_key else None
    operator_verifier = (
        Verifier.load(config.operator_public_key) if config.operator_public_key else None
    )
    carriers = list(settings.carriers or sorted(nodes))
    if not carriers:
        raise InvalidRequestError("no carrier's node said hello: nothing to ask")
    store = open_round_store(config)
    for entry in config.carriers:
        store.upsert_carrier(entry.id, entry.name)
    link = FlowerLink(grid, nodes, ttl=float(settings.deadline_seconds) + 60.0)
    manager = RoundManager(
        store,
        link,
        signer=signer,
        node_verifiers=load_result_keys(config),
        operator_verifier=operator_verifier,
        allow_unsigned=config.insecure,
        request_ttl=dt.timedelta(seconds=config.request_ttl_seconds),
        default_deadline=dt.timedelta(seconds=config.default_deadline_seconds),
        disconnect_grace=config.disconnect_grace_seconds,
    )
    link.manager = manager
    pump = asyncio.create_task(link.pump())
    try:
        request = manager.build_request(
            settings.period, settings.queries, carriers, settings.deadline_seconds
        )
        record = await manager.create_round(
            manager.sign(request),
            carriers,
            quorum=settings.quorum,
            deadline_seconds=settings.deadline_seconds,
            request=request,
        )
        await manager.wait_until_closed(record.round_id, settings.deadline_seconds + 30.0)
        final, statuses = await manager.snapshot(record.round_id)
        tables = await manager.tables(final)
        # The answered carriers' nodes may forget their answers: they are stored here. One
        # last push of those acknowledgements (their replies are not waited for).
        await asyncio.sleep(PULL_SECONDS * 2)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await manager.close()
        link.close()
        store.close()
    outcome = RoundOutcome(
        round_id=final.round_id,
        state=final.state,
        period=settings.period,
        carriers=tuple(
            (c.carrier_id, c.state, c.message) for c in sorted(statuses, key=lambda c: c.carrier_id)
        ),
        tables=tuple(tables),
        late=tuple(c.carrier_id for c in statuses if c.late_answer_at is not None),
    )
    return outcome


def run_round(grid: Grid, settings: RoundSettings) -> RoundOutcome:
    """One round through ``grid``: find the carriers' nodes, run the round, store it, export."""
    known = [c.id for c in settings.config.carriers]
    expected = settings.expected_nodes or len(settings.carriers or known)
    nodes = discover(grid, known, expected, settings.hello_seconds)
    log.info("%d of %d carriers' nodes found", len(nodes), len(known))
    outcome = asyncio.run(_run_round(grid, settings, nodes))
    answered = sum(1 for _, s, _ in outcome.carriers if s is CarrierRoundState.ANSWERED)
    log.info(
        "round %s %s: %d of %d carriers answered",
        outcome.round_id,
        outcome.state,
        answered,
        len(outcome.carriers),
    )
    if settings.output is not None:
        settings.output.parent.mkdir(parents=True, exist_ok=True)
        write_export(outcome.tables, settings.output, outcome.info())
    if settings.on_outcome is not None:
        settings.on_outcome(outcome)
    return outcome


def make_server_app(settings: RoundSettings | None = None) -> ServerApp:
    """The ServerApp; ``settings``: the round to run (else read from the run config)."""
    app = ServerApp()

    def main(grid: Grid, context: Context) -> None:
        run_round(grid, settings or settings_from_run_config(context.run_config))

    app.main()(main)
    return app


#: What the app bundle names (``coordinator.flower:server_app``).
server_app = make_server_app()
