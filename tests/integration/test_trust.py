"""Trust over real gRPC on loopback: mutual TLS with provisioned identities, operator roles,
signed requests and receipts, the nodes' audit logs, and size limits."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from carrier_node.config import TlsFiles
from carrier_node.daemon import NodeDaemon
from carrier_node.records.audit import read_entries, verify
from coordinator.client import OperatorClient
from coordinator.provision import Authority, cert_pem, key_pem
from coordinator.receipts import verify_round
from coordinator.rounds import new_request, sign_request
from coordinator.store import CarrierRoundState, RoundState
from fedoversight import wire
from fedoversight.domain import RequestSpec
from fedoversight.errors import AuthenticationError, OversightError, PolicyRefusedError
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.testing import OPERATOR, VIEWER, SimulatedFederation
from fedoversight.tls import load_certificate
from fedoversight.v1 import federation_pb2, federation_pb2_grpc, types_pb2

PERIOD = Period.parse("2026-01:2026-03")
QUERY = wire.make_query("enrollment.member_months")


def small(federation_data: dict[str, Path], n: int) -> dict[str, Path]:
    """The n smallest carriers (fast rounds)."""
    by_size = sorted(
        federation_data, key=lambda c: sum(f.stat().st_size for f in federation_data[c].iterdir())
    )
    return {c: federation_data[c] for c in sorted(by_size[:n])}


async def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return check()


def logged(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> bool:
    """Whether ``logger`` (or a module under it) logged a message containing ``text``."""
    return any(
        (r.name == logger or r.name.startswith(logger + ".")) and text in r.getMessage()
        for r in caplog.records
    )


async def test_mutual_tls_roles_signed_rounds_and_receipts(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 3)
    async with SimulatedFederation(dirs, tmp_path) as fed:
        assert fed.client is not None and fed.coordinator is not None and fed.pki is not None
        assert fed.coordinator.config.tls is not None and not fed.coordinator.config.insecure
        outcome = await fed.client.run_round(PERIOD, [QUERY], deadline_seconds=120)
        assert outcome.state is RoundState.COMPLETE
        # Every receipt verifies, and each node's audit log holds the very bytes it released.
        store = fed.coordinator.store
        check = verify_round(
            store,
            outcome.round_id,
            operator_verifier=fed.coordinator.operator_verifier,
            node_verifiers=fed.coordinator.node_verifiers or {},
        )
        assert check.ok and len(check.receipts) == 3
        for stored in store.results(outcome.round_id):
            node = fed.nodes[stored.carrier_id]
            released = [
                e
                for _, e in read_entries(node.audit.path)
                if e and e["kind"] == "released" and e["round_id"] == outcome.round_id
            ]
            assert len(released) == 1
            assert released[0]["result_sha256"] == hashlib.sha256(stored.result_bytes).hexdigest()
            assert released[0]["signature"] == stored.signature.hex()
            assert verify(node.audit.path).ok
        # A round the operator signed on their own side is dispatched exactly as signed.
        signer = fed.operator_signer
        assert signer is not None
        kit = fed.pki.operators[OPERATOR]
        async with OperatorClient(
            fed.address, ca_cert=kit.ca_cert, cert=kit.cert, key=kit.key, signer=signer
        ) as own:
            signed_round = await own.run_round(PERIOD, [QUERY], deadline_seconds=120)
        assert signed_round.state is RoundState.COMPLETE
        record = store.get_round(signed_round.round_id)
        signer.verifier.verify(record.request_bytes, record.signature, record.key_id)
        # A request signed with another key, or expired, is refused by the coordinator.
        rogue_signed = OperatorClient(
            fed.address,
            ca_cert=kit.ca_cert,
            cert=kit.cert,
            key=kit.key,
            signer=Signer.generate(),
        )
        async with rogue_signed:
            with pytest.raises(AuthenticationError):
                await rogue_signed.create_round(PERIOD, [QUERY])
        stale = sign_request(
            new_request(
                PERIOD,
                [QUERY],
                dt.timedelta(seconds=1),
                now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
            ),
            signer,
        )
        from fedoversight.v1 import operator_pb2, operator_pb2_grpc

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await operator_pb2_grpc.OversightStub(fed.client._channel).CreateRound(
                operator_pb2.CreateRoundRequest(signed_request=stale), timeout=10
            )
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # A viewer reads but may not run rounds.
        async with fed.operator_client(VIEWER) as viewer:
            assert len(await viewer.list_carriers()) == 3
            assert (await viewer.get_round(outcome.round_id)).state is RoundState.COMPLETE
            with pytest.raises(PolicyRefusedError, match="may not"):
                await viewer.create_round(PERIOD, [QUERY])
        # A carrier's certificate carries no operator rights.
        node_kit = fed.pki.carriers[sorted(dirs)[0]]
        async with OperatorClient(
            fed.address, ca_cert=node_kit.ca_cert, cert=node_kit.cert, key=node_kit.key
        ) as carrier_as_operator:
            with pytest.raises(AuthenticationError, match="carrier certificate"):
                await carrier_as_operator.list_rounds()
        # Plaintext, or TLS without a client certificate, does not get through at all.
        async with OperatorClient(fed.address) as plaintext:
            with pytest.raises(OversightError):
                await plaintext.list_rounds()
        async with OperatorClient(fed.address, ca_cert=kit.ca_cert) as anonymous:
            with pytest.raises(OversightError):
                await anonymous.list_rounds()


async def test_rogue_impersonating_unknown_revoked_and_expired_nodes_are_refused(
    federation_data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dirs = small(federation_data, 2)
    first, second = sorted(dirs)
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    async with SimulatedFederation(
        dirs, tmp_path / "run", revocation_file=revoked, heartbeat_seconds=1
    ) as fed:
        assert fed.coordinator is not None and fed.pki is not None
        genuine = fed.coordinator.hub.sessions[first]
        ca = Authority.load(fed.pki.ca_cert, fed.pki.ca_key)
        identities = tmp_path / "ids"
        identities.mkdir()

        pki = fed.pki

        def identity(name: str, authority: Authority, **issue: object) -> TlsFiles:
            cert, key = authority.issue(name, **issue)  # type: ignore[arg-type]
            (identities / f"{name}-{id(cert)}.crt").write_bytes(cert_pem(cert))
            (identities / f"{name}-{id(cert)}.key").write_bytes(key_pem(key))
            return TlsFiles(
                ca_cert=pki.ca_cert,
                cert=identities / f"{name}-{id(cert)}.crt",
                key=identities / f"{name}-{id(cert)}.key",
            )

        async def attempt(carrier_id: str, tls: TlsFiles, state: str) -> NodeDaemon:
            node = NodeDaemon(
                fed.node_config(first, tls=tls, state_dir=tmp_path / state).model_copy(
                    update={"carrier_id": carrier_id}
                )
            )
            fed._tasks[f"{state}"] = asyncio.create_task(node.run())
            fed.nodes[f"{state}"] = node
            return node

        # A node with a certificate from another CA, claiming a registered carrier id.
        rogue = await attempt(first, identity(first, Authority.create("rogue CA")), "rogue")
        # A valid node (the first carrier's own kit) claiming to be the second carrier.
        impostor = await attempt(second, fed.node_config(first).tls, "impostor")  # type: ignore[arg-type]
        # A certificate of the federation CA for a carrier nobody registered.
        stranger = await attempt("c999", identity("c999", ca), "stranger")
        assert await wait_for(
            lambda: logged(
                caplog, "carrier_node.daemon", "coordinator refused this node: unknown carrier"
            )
        )
        assert await wait_for(
            lambda: logged(caplog, "coordinator.hub", "claiming carrier c999: unknown carrier")
        )
        assert await wait_for(
            lambda: logged(
                caplog,
                "carrier_node.daemon",
                "coordinator refused this node: certificate does not match the carrier id",
            )
        )
        assert logged(
            caplog,
            "coordinator.hub",
            f"claiming carrier {second}: certificate does not match the carrier id",
        )
        assert await wait_for(
            lambda: logged(caplog, "carrier_node.daemon", "TLS with the coordinator failed")
        )
        for node in (rogue, impostor, stranger):
            assert not node.connected.is_set()
        # The genuine sessions were never displaced.
        assert fed.coordinator.hub.sessions[first] is genuine
        assert set(fed.coordinator.hub.sessions) == {first, second}
        # Revoking the second carrier's certificate: its live stream is closed at its next
        # message (a heartbeat), and its reconnection refused.
        serial = load_certificate(fed.pki.carriers[second].cert).serial_number  # type: ignore[arg-type]
        revoked.write_text(f"{serial:x}\n")
        assert await wait_for(
            lambda: logged(
                caplog, "coordinator.hub", f"closing the stream of {second}: its certificate was"
            )
        )
        assert await wait_for(
            lambda: logged(
                caplog, "coordinator.hub", f"claiming carrier {second}: certificate revoked"
            )
        )
        assert await wait_for(
            lambda: logged(
                caplog, "carrier_node.daemon", "coordinator refused this node: certificate revoked"
            )
        )
        assert second not in fed.coordinator.hub.sessions
        # An expired certificate: the node names the problem itself; the coordinator's TLS
        # refuses it anyway when presented.
        expired = identity(first, ca, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=30), days=10)
        await attempt(first, expired, "expired")
        assert await wait_for(
            lambda: logged(caplog, "carrier_node.daemon", "cannot connect: this node's certificate")
        )
        assert logged(caplog, "carrier_node.daemon", "expired on")
        credentials = grpc.ssl_channel_credentials(
            fed.pki.ca_cert.read_bytes(), expired.key.read_bytes(), expired.cert.read_bytes()
        )
        async with grpc.aio.secure_channel(fed.address, credentials) as channel:
            stream = federation_pb2_grpc.NodeFederationStub(channel).Connect(timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as handshake:
                await stream.write(
                    federation_pb2.NodeMessage(
                        hello=federation_pb2.Hello(carrier_id=first, catalogue_version="1")
                    )
                )
                await stream.read()
            assert handshake.value.code() is grpc.StatusCode.UNAVAILABLE
        assert fed.coordinator.hub.sessions[first] is genuine


async def test_bad_requests_over_the_stream_are_refused_and_logged(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 1)
    (carrier,) = dirs
    replies: list[federation_pb2.NodeMessage] = []
    async with SimulatedFederation(dirs, tmp_path) as fed:
        assert fed.client is not None and fed.coordinator is not None
        outcome = await fed.client.run_round(PERIOD, [QUERY], deadline_seconds=60)
        assert outcome.state is RoundState.COMPLETE
        node = fed.nodes[carrier]
        assert await wait_for(lambda: node._state.pending() == [])  # the answer was acked
        node.connection.wiretap = replies.append
        signer = fed.operator_signer
        assert signer is not None
        genuine = fed.coordinator.store.get_round(outcome.round_id)

        def spec(request_id: str, **changes: object) -> bytes:
            now = dt.datetime.now(dt.UTC)
            fields: dict[str, object] = {
                "request_id": request_id,
                "round_id": request_id.split(".")[0],
                "catalogue_version": "1",
                "period": PERIOD,
                "queries": (QUERY,),
                "issued_at": now,
                "expires_at": now + dt.timedelta(minutes=5),
                "nonce": os.urandom(16),
                "carriers": (carrier,),
            }
            fields.update(changes)
            return wire.request_to_pb(RequestSpec(**fields)).SerializeToString()  # type: ignore[arg-type]

        good = spec("t-1.q")
        now = dt.datetime.now(dt.UTC)
        sent = {
            "unsigned": types_pb2.SignedRequest(request=spec("u-1.q")),
            "tampered": types_pb2.SignedRequest(
                request=good.replace(b"t-1.q", b"t-2.q"),
                signature=signer.sign(good),
                key_id=signer.key_id,
            ),
            "expired": sign_bytes(
                spec(
                    "e-1.q",
                    issued_at=now - dt.timedelta(hours=2),
                    expires_at=now - dt.timedelta(hours=1),
                ),
                signer,
            ),
            "replayed": types_pb2.SignedRequest(
                request=genuine.request_bytes,
                signature=genuine.signature,
                key_id=genuine.key_id,
            ),
            # Genuinely signed, but for another carrier's round: replayed to this one.
            "elsewhere": sign_bytes(spec("o-1.q", carriers=("c999",)), signer),
        }
        for message in sent.values():
            fed.coordinator.hub.send(carrier, federation_pb2.CoordinatorMessage(request=message))
        assert await wait_for(lambda: len(replies) >= 5)
    codes = {r.refusal.request_id: r.refusal.code for r in replies if r.HasField("refusal")}
    assert codes == {
        "u-1.q": types_pb2.ERROR_CODE_UNAUTHENTICATED,
        "t-2.q": types_pb2.ERROR_CODE_UNAUTHENTICATED,
        "e-1.q": types_pb2.ERROR_CODE_EXPIRED,
        genuine.round_id + ".q": types_pb2.ERROR_CODE_REPLAYED,
        "o-1.q": types_pb2.ERROR_CODE_NOT_ADDRESSED,
    }
    refused = {
        e["request_id"]: e["reason"]
        for _, e in read_entries(node.audit.path)
        if e and e["kind"] == "refused"
    }
    assert refused == {
        "u-1.q": "the request is not signed",
        "t-2.q": "bad signature",
        "e-1.q": "outside its validity window",
        genuine.round_id + ".q": "nonce seen before",
        "o-1.q": "the request does not name this carrier",
    }
    assert verify(node.audit.path).ok


def sign_bytes(data: bytes, signer: Signer) -> types_pb2.SignedRequest:
    return types_pb2.SignedRequest(request=data, signature=signer.sign(data), key_id=signer.key_id)


async def test_a_tampered_result_is_rejected_by_the_coordinator(
    federation_data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dirs = small(federation_data, 2)
    victim, honest = sorted(dirs)
    async with SimulatedFederation(dirs, tmp_path) as fed:
        assert fed.client is not None and fed.coordinator is not None
        node = fed.nodes[victim]
        real = node.results.result_message

        def tampered(*args: object) -> federation_pb2.NodeMessage:
            message = real(*args)  # type: ignore[arg-type]
            result = types_pb2.MetricResult.FromString(message.result.result)
            result.data_snapshot = "not what was computed on"
            message.result.result = result.SerializeToString()  # after it was signed
            return message

        node.results.result_message = tampered  # type: ignore[method-assign,assignment]
        outcome = await fed.client.run_round(PERIOD, [QUERY], quorum=1, deadline_seconds=4)
        stored = {r.carrier_id for r in fed.coordinator.store.results(outcome.round_id)}
    states = {c: s for c, s, _ in outcome.carriers}
    assert outcome.state is RoundState.PARTIAL
    assert states[honest] is CarrierRoundState.ANSWERED
    assert states[victim] is CarrierRoundState.TIMED_OUT
    assert stored == {honest}
    assert logged(caplog, "coordinator.rounds", f"rejected a result from {victim}: bad signature")


async def test_oversized_messages_are_refused_and_the_coordinator_carries_on(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = small(federation_data, 1)
    (carrier,) = dirs
    limit = 64 * 1024
    async with SimulatedFederation(dirs, tmp_path, max_message_bytes=limit) as fed:
        assert fed.client is not None and fed.pki is not None and fed.coordinator is not None
        # An operator call over the limit.
        with pytest.raises(OversightError):
            await fed.client.create_round(PERIOD, [QUERY], idempotency_key="k" * (limit + 1))
        # A node stream message over the limit, from a genuine carrier identity.
        kit = fed.pki.carriers[carrier]
        assert kit.cert is not None and kit.key is not None
        credentials = grpc.ssl_channel_credentials(
            kit.ca_cert.read_bytes(), kit.key.read_bytes(), kit.cert.read_bytes()
        )
        async with grpc.aio.secure_channel(fed.address, credentials) as channel:
            stream = federation_pb2_grpc.NodeFederationStub(channel).Connect(timeout=10)
            await stream.write(
                federation_pb2.NodeMessage(result=types_pb2.SignedResult(result=b"x" * (limit + 1)))
            )
            with pytest.raises(grpc.aio.AioRpcError) as exhausted:
                await stream.read()
            assert exhausted.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # Nothing of it reached the round store, and rounds go on.
        outcome = await fed.client.run_round(PERIOD, [QUERY], deadline_seconds=60)
        assert outcome.state is RoundState.COMPLETE


async def test_the_insecure_demo_mode_still_runs_and_says_so(
    federation_data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dirs = small(federation_data, 2)
    async with SimulatedFederation(dirs, tmp_path, insecure=True) as fed:
        assert fed.client is not None and fed.pki is None
        outcome = await fed.client.run_round(PERIOD, [QUERY], deadline_seconds=60)
    assert outcome.state is RoundState.COMPLETE
    assert logged(caplog, "coordinator.server", "INSECURE DEMO MODE")
    assert logged(caplog, "carrier_node.daemon", "INSECURE DEMO MODE")
    assert not (tmp_path / "pki").exists()
