"""Round overhead: the federation's round latency against a bare grpc.aio fan-out.

Starts a coordinator and N carrier nodes (default 65) on loopback and runs R rounds (default
100) of a trivial metric. Each node answers from a canned engine result (the metric's real
result on its data, computed once), so what is timed is the federation's own work: request
building and signing, dispatch, gate checks, policy, disclosure control, result encoding,
persistence at both ends, combination. In the same run, a bare grpc.aio exchange with N peers
over the same connection pattern (one long-lived bidirectional stream per peer) and the same
message sizes is timed, and the ratio of the two is printed.

Two floors are timed in the same run, to show what of the gap the trust model itself costs on
one machine: the same bare fan-out over mutual TLS (the federation's certificates), and the
signatures every round needs (each node verifies the operator's request and signs its result,
the coordinator verifies each result), done back to back for N carriers with the run's message
sizes. On one machine the N nodes' share runs on the same cores as the coordinator; in a
deployment each carrier's runs on its own.

    python bench/round_overhead.py [--carriers 65] [--rounds 100] [--suite]

``--suite`` answers the full catalogue in each round instead of one trivial metric (the full
suite's result sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa

from carrier_node.data.files import FileSource
from coordinator.provision import Provisioned
from fedoversight import wire
from fedoversight.periods import Period
from fedoversight.signing import Signer
from oversight_sim.harness import SimulatedFederation
from oversight_sim.suites import monthly_suite
from oversight_sim.synth import SynthConfig, write_carriers

PERIOD = Period.parse("2026-01:2026-03")


class CannedSource:
    """A data source that answers each SQL text from a cache filled by a real source once."""

    dialect = "duckdb"

    def __init__(self, real: FileSource) -> None:
        self._real = real
        self._cache: dict[str, pa.Table] = {}

    def execute_arrow(self, sql: str) -> pa.Table:
        table = self._cache.get(sql)
        if table is None:
            table = self._cache[sql] = self._real.execute_arrow(sql)
        return table

    def snapshot(self) -> str:
        return self._real.snapshot()

    @contextmanager
    def session(self) -> Iterator[CannedSession]:
        with ExitStack() as stack:
            yield CannedSession(self._cache, lambda: stack.enter_context(self._real.session()))


class CannedSession:
    """A batch's session: answers from the cache; on a miss, opens a real session and makes the
    batch's shared tables there first."""

    def __init__(self, cache: dict[str, pa.Table], open_real: Callable[[], Any]) -> None:
        self._cache = cache
        self._open_real = open_real
        self._real: Any = None
        self._creates: list[tuple[str, str]] = []

    def create_table(self, name: str, statement: str) -> None:
        self._creates.append((name, statement))
        if self._real is not None:
            self._real.create_table(name, statement)

    def drop_table(self, name: str) -> None:
        if self._real is not None:
            self._real.drop_table(name)

    def execute_arrow(self, sql: str) -> pa.Table:
        table = self._cache.get(sql)
        if table is None:
            if self._real is None:
                self._real = self._open_real()
                for name, statement in self._creates:
                    self._real.create_table(name, statement)
            table = self._cache[sql] = self._real.execute_arrow(sql)
        return table

    def snapshot(self) -> str:
        return self._real.snapshot()


def queries(suite: bool) -> list[object]:
    if not suite:
        return [wire.make_query("enrollment.member_months")]
    return list(monthly_suite())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclasses.dataclass(frozen=True)
class BareTls:
    """Mutual TLS for the bare fan-out: the coordinator's identity, one identity per peer."""

    ca_cert: bytes
    server: tuple[bytes, bytes]  # key, certificate chain
    peers: list[tuple[bytes, bytes]]

    @classmethod
    def of(cls, pki: Provisioned) -> BareTls:
        peers = []
        for carrier in sorted(pki.carriers):
            kit = pki.carriers[carrier]
            assert kit.key is not None and kit.cert is not None
            peers.append((kit.key.read_bytes(), kit.cert.read_bytes()))
        return cls(
            ca_cert=pki.trust_bundle.read_bytes(),
            server=(pki.coordinator_key.read_bytes(), pki.coordinator_cert.read_bytes()),
            peers=peers,
        )


async def federation_rounds(
    dirs: dict[str, Path], work: Path, rounds: int, suite: bool
) -> tuple[list[float], int, int, BareTls]:
    qs = queries(suite)
    sizes_request: list[int] = []
    sizes_result: list[int] = []

    def tap(message: object) -> None:
        if message.HasField("result"):  # type: ignore[attr-defined]
            sizes_result.append(message.ByteSize())  # type: ignore[attr-defined]

    fed = SimulatedFederation(dirs, work, wiretap=tap)
    await fed.start()
    try:
        for node in fed.nodes.values():
            assert node.data.source is not None
            canned = CannedSource(node.data.source)  # type: ignore[arg-type]
            node.data.source = canned
            assert node.data.engine is not None
            node.data.engine.source = canned
        assert fed.client is not None
        tls = BareTls.of(fed.provision())
        await fed.client.run_round(PERIOD, qs)  # warm-up: fills the canned results
        signed = fed.coordinator.rounds.sign(  # type: ignore[union-attr]
            fed.coordinator.rounds.build_request(  # type: ignore[union-attr]
                PERIOD, qs, sorted(dirs)
            )  # type: ignore[arg-type]
        )
        sizes_request.append(signed.ByteSize())
        sizes_result.clear()
        latencies = []
        for _ in range(rounds):
            started = time.perf_counter()
            outcome_id = await fed.client.create_round(PERIOD, qs)  # type: ignore[arg-type]
            async for progress in fed.client.watch(outcome_id, timeout=120):
                last = progress
            latencies.append(time.perf_counter() - started)
            assert last.answered == len(dirs), last
    finally:
        await fed.stop()
    return latencies, sizes_request[0], int(statistics.median(sizes_result)), tls


# --- the bare baseline ----------------------------------------------------------------------


def _identity(x: bytes) -> bytes:
    return x


class BareHub:
    def __init__(self) -> None:
        self.queues: dict[int, asyncio.Queue[bytes | None]] = {}
        self.replies: asyncio.Queue[int] = asyncio.Queue()

    async def connect(self, request_iterator, context):  # type: ignore[no-untyped-def]
        hello = await anext(request_iterator)
        peer = int(hello.decode())
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queues[peer] = queue

        async def read() -> None:
            async for _reply in request_iterator:
                self.replies.put_nowait(peer)

        reader = asyncio.create_task(read())
        yield b"welcome"
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            reader.cancel()


async def bare_rounds(
    peers: int, rounds: int, request_size: int, result_size: int, tls: BareTls | None = None
) -> list[float]:
    hub = BareHub()
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bare.Hub",
        {
            "Connect": grpc.stream_stream_rpc_method_handler(
                hub.connect, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port(
            "127.0.0.1:0",
            grpc.ssl_server_credentials(
                [tls.server], root_certificates=tls.ca_cert, require_client_auth=True
            ),
        )
    await server.start()
    result = b"r" * result_size

    def channel(i: int) -> grpc.aio.Channel:
        if tls is None:
            return grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        key, cert = tls.peers[i % len(tls.peers)]
        return grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            grpc.ssl_channel_credentials(
                root_certificates=tls.ca_cert, private_key=key, certificate_chain=cert
            ),
        )

    async def peer(i: int, ready: asyncio.Event) -> None:
        async with channel(i) as channel_:
            call = channel_.stream_stream(
                "/bare.Hub/Connect", request_serializer=_identity, response_deserializer=_identity
            )()
            await call.write(str(i).encode())
            await call.read()  # welcome
            ready.set()
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                await call.write(result)

    events = [asyncio.Event() for _ in range(peers)]
    tasks = [asyncio.create_task(peer(i, e)) for i, e in enumerate(events)]
    await asyncio.gather(*(e.wait() for e in events))
    request = b"q" * request_size
    latencies = []
    for _ in range(rounds + 1):
        started = time.perf_counter()
        for q in hub.queues.values():
            q.put_nowait(request)
        for _ in range(peers):
            await hub.replies.get()
        latencies.append(time.perf_counter() - started)
    for q in hub.queues.values():
        q.put_nowait(None)
    await server.stop(0.5)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies[1:]


def signature_floor(carriers: int, rounds: int, request_size: int, result_size: int) -> list[float]:
    """Per round: the operator's request signed once; per carrier, the request verified, a
    result signed, the result verified (the signatures the trust model requires)."""
    operator = Signer.generate()
    operator_verifier = operator.verifier
    nodes = [Signer.generate() for _ in range(carriers)]
    verifiers = [n.verifier for n in nodes]
    request = os.urandom(request_size)
    result = os.urandom(result_size)
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        signature = operator.sign(request)
        for node, verifier in zip(nodes, verifiers, strict=True):
            operator_verifier.verify(request, signature, operator.key_id)
            verifier.verify(result, node.sign(result), node.key_id)
        latencies.append(time.perf_counter() - started)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carriers", type=int, default=65)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--members", type=int, default=6_000)
    parser.add_argument("--suite", action="store_true", help="full catalogue per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = write_carriers(
            root / "data",
            SynthConfig(carriers=args.carriers, members=args.members, seed=3, months=3),
        )
        fed, request_size, result_size, tls = asyncio.run(
            federation_rounds({d.name: d for d in dirs}, root / "run", args.rounds, args.suite)
        )
    bare = asyncio.run(bare_rounds(args.carriers, args.rounds, request_size, result_size))
    bare_tls = asyncio.run(bare_rounds(args.carriers, args.rounds, request_size, result_size, tls))
    floor = signature_floor(args.carriers, args.rounds, request_size, result_size)
    f50, f99 = percentile(fed, 0.5), percentile(fed, 0.99)
    b50, b99 = percentile(bare, 0.5), percentile(bare, 0.99)
    t50, s50 = percentile(bare_tls, 0.5), percentile(floor, 0.5)
    print(
        f"carriers={args.carriers} rounds={args.rounds} suite={args.suite}"
        f" request_bytes={request_size} result_bytes(median)={result_size}"
    )
    print(f"federation round latency: p50 {f50 * 1000:.1f} ms  p99 {f99 * 1000:.1f} ms")
    print(f"bare grpc.aio fan-out:    p50 {b50 * 1000:.1f} ms  p99 {b99 * 1000:.1f} ms")
    print(f"ratio (federation / bare): p50 {f50 / b50:.2f}x  p99 {f99 / b99:.2f}x")
    print(f"bare fan-out over mutual TLS: p50 {t50 * 1000:.1f} ms ({t50 / b50:.2f}x bare)")
    print(
        f"signatures alone, {args.carriers} carriers back to back: p50 {s50 * 1000:.1f} ms"
        f" ({s50 / b50:.2f}x bare)"
    )
    print(
        f"trust-model floor (mutual TLS fan-out + signatures): {(t50 + s50) * 1000:.1f} ms"
        f" ({(t50 + s50) / b50:.2f}x bare); federation / floor: {f50 / (t50 + s50):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
