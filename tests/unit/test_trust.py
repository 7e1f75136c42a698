"""Trust without a network: certificate identities, operator roles, the node's front door and
its audit log, the coordinator's receipts."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carrier_node.config import NodeConfig, TlsFiles
from carrier_node.daemon import NodeDaemon
from carrier_node.daemon.gate import ReplayedRequestError
from carrier_node.records.audit import JsonValue, read_entries, verify
from coordinator.access import (
    CarrierAccess,
    ForbiddenError,
    OperatorAccess,
    Revocations,
)
from coordinator.cli import app as oversight_app
from coordinator.config import CarrierEntry, OperatorEntry, Role
from coordinator.provision import Authority, cert_pem
from coordinator.receipts import verify_round
from coordinator.rounds import RoundManager
from coordinator.store import CarrierRoundState, RoundStore
from fedoversight import wire
from fedoversight.errors import AuthenticationError, ConfigError, InvalidRequestError
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.tls import certificate_info
from fedoversight.v1 import federation_pb2, types_pb2
from tests.unit.trust_kit import (
    CountingSource,
    FakeContext,
    answer,
    result_for,
    secure_node,
    sign,
    signed_request,
)

NOW = dt.datetime.now(dt.UTC)


# --- carrier identities ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def federation_ca() -> Authority:
    return Authority.create("federation CA")


def carrier_access(ca: Authority, revoked: tuple[str, ...] = (), **entries: str) -> CarrierAccess:
    registry = {c: CarrierEntry(id=c) for c in ("c001", "c002")}
    registry.update({c: CarrierEntry(id=c, cert_sha256=pin) for c, pin in entries.items()})
    return CarrierAccess(
        registry,
        federation_ca=ca.cert,
        revocations=Revocations(revoked),
        require_certificate=True,
    )


def test_a_valid_carrier_certificate_is_accepted(federation_ca: Authority) -> None:
    cert, _ = federation_ca.issue("c001")
    access = carrier_access(federation_ca)
    assert access.refusal("c001", FakeContext(cert_pem(cert))) is None


def test_a_certificate_of_another_ca_is_refused(federation_ca: Authority) -> None:
    rogue_ca = Authority.create("federation CA")  # same name, different key
    cert, _ = rogue_ca.issue("c001")
    reason = carrier_access(federation_ca).check_certificate("c001", cert, certificate_info(cert))
    assert reason == "certificate not issued by the federation CA"


def test_a_valid_carrier_cannot_claim_another_carrier_id(federation_ca: Authority) -> None:
    cert, _ = federation_ca.issue("c001")
    access = carrier_access(federation_ca)
    reason = access.refusal("c002", FakeContext(cert_pem(cert)))
    assert reason == "certificate does not match the carrier id"
    assert access.refusal("c002", FakeContext(None)) == "no client certificate"


def test_revoked_and_expired_certificates_are_refused(federation_ca: Authority) -> None:
    cert, _ = federation_ca.issue("c001")
    info = certificate_info(cert)
    revoked = carrier_access(federation_ca, revoked=(info.serial.upper(),))
    assert revoked.check_certificate("c001", cert, info) == "certificate revoked"
    old, _ = federation_ca.issue("c001", now=NOW - dt.timedelta(days=20), days=10)
    reason = carrier_access(federation_ca).check_certificate("c001", old, certificate_info(old))
    assert reason == "certificate expired or not yet valid"


def test_a_pinned_carrier_accepts_only_its_own_certificate(federation_ca: Authority) -> None:
    own_ca = Authority.create("carrier's own CA")
    own, _ = own_ca.issue("c003")
    other, _ = own_ca.issue("c003")
    access = carrier_access(federation_ca, c003=certificate_info(own).fingerprint)
    assert access.check_certificate("c003", own, certificate_info(own)) is None
    assert access.check_certificate("c003", other, certificate_info(other)) == (
        "certificate is not the one registered for this carrier"
    )
    # The carrier's own CA cannot vouch for an unpinned carrier.
    forged, _ = own_ca.issue("c001")
    assert access.check_certificate("c001", forged, certificate_info(forged)) == (
        "certificate not issued by the federation CA"
    )


def test_the_revocation_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("# none yet\n")
    revocations = Revocations(("0a",), path)
    assert revocations.is_revoked("a") and not revocations.is_revoked("1b2c")
    path.write_text("1B:2C  # lost laptop\n")
    assert revocations.is_revoked("1b2c")


# --- operators ------------------------------------------------------------------------------


TOKEN = "s3cret-token"


def operator_access(ca: Authority, revoked: tuple[str, ...] = ()) -> OperatorAccess:
    return OperatorAccess(
        [
            OperatorEntry(name="alice", role=Role.OPERATOR),
            OperatorEntry(name="bob", role=Role.VIEWER),
            OperatorEntry(
                name="robot",
                role=Role.VIEWER,
                token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
            ),
        ],
        revocations=Revocations(revoked),
        tls=True,
        carrier_ids=["c001"],
    )


def ctx(ca: Authority, name: str, token: str | None = None) -> FakeContext:
    cert, _ = ca.issue(name)
    return FakeContext(cert_pem(cert), token)


def test_operators_run_rounds_and_viewers_only_read(federation_ca: Authority) -> None:
    access = operator_access(federation_ca)
    alice, bob = ctx(federation_ca, "alice"), ctx(federation_ca, "bob")
    assert access.require(alice, Role.OPERATOR).name == "alice"
    assert access.require(bob, Role.VIEWER).role is Role.VIEWER
    with pytest.raises(ForbiddenError):
        access.require(bob, Role.OPERATOR)


def test_tokens_carriers_strangers_and_revoked_operators(federation_ca: Authority) -> None:
    access = operator_access(federation_ca)
    # A token names its holder whatever certificate carried the connection.
    caller = access.identify(ctx(federation_ca, "c001", token=TOKEN))
    assert (caller.name, caller.role, caller.via) == ("robot", Role.VIEWER, "token")
    with pytest.raises(AuthenticationError, match="unknown token"):
        access.identify(ctx(federation_ca, "alice", token="guess"))
    with pytest.raises(AuthenticationError, match="carrier certificate"):
        access.identify(ctx(federation_ca, "c001"))
    with pytest.raises(AuthenticationError, match="not registered"):
        access.identify(ctx(federation_ca, "mallory"))
    cert, _ = federation_ca.issue("alice")
    revoked = operator_access(federation_ca, revoked=(certificate_info(cert).serial,))
    with pytest.raises(AuthenticationError, match="revoked"):
        revoked.identify(FakeContext(cert_pem(cert)))
    with pytest.raises(AuthenticationError, match="revoked"):
        revoked.identify(FakeContext(cert_pem(cert), TOKEN))


def test_the_operator_api_is_open_only_in_an_insecure_demo_without_operators() -> None:
    demo = OperatorAccess([], revocations=Revocations(), tls=False)
    assert demo.identify(FakeContext()).via == "insecure"
    locked = OperatorAccess(
        [OperatorEntry(name="alice", role=Role.OPERATOR)], revocations=Revocations(), tls=False
    )
    with pytest.raises(AuthenticationError):
        locked.identify(FakeContext())


# --- the node's front door and its audit log ------------------------------------------------


def refusals(node: NodeDaemon) -> list[dict[str, JsonValue]]:
    return [e for _, e in read_entries(node.audit.path) if e and e["kind"] == "refused"]


async def test_bad_requests_are_refused_and_logged_before_anything_runs(tmp_path: Path) -> None:
    operator, rogue = Signer.generate(), Signer.generate()
    source = CountingSource()
    node = secure_node(tmp_path, operator, source)
    try:
        good = signed_request(operator)
        tampered = types_pb2.SignedRequest()
        tampered.CopyFrom(good)
        tampered.request = good.request.replace(b"cost.pmpm", b"cost.pmpn")
        cases = [
            (signed_request(None), types_pb2.ERROR_CODE_UNAUTHENTICATED, "not signed"),
            (tampered, types_pb2.ERROR_CODE_UNAUTHENTICATED, "bad signature"),
            (signed_request(rogue), types_pb2.ERROR_CODE_UNAUTHENTICATED, "unknown key"),
            (
                signed_request(
                    operator,
                    request_id="old.q",
                    issued_at=NOW - dt.timedelta(hours=3),
                    expires_at=NOW - dt.timedelta(hours=2),
                ),
                types_pb2.ERROR_CODE_EXPIRED,
                "validity window",
            ),
        ]
        for signed, code, reason in cases:
            reply = await answer(node, signed)
            assert reply.HasField("refusal"), reason
            assert reply.refusal.code == code
            assert reply.refusal.public_message  # a fixed message, never the detail
            assert reason not in reply.refusal.public_message
        # A replay: the same genuinely signed request a second time, once its answer was taken.
        first = node.admit(good)
        assert first.request_id == "r1.q"
        with pytest.raises(ReplayedRequestError):
            node.admit(good)
        assert source.calls == 0
        logged = refusals(node)
        assert [e["code"] for e in logged] == [
            "ERROR_CODE_UNAUTHENTICATED",
            "ERROR_CODE_UNAUTHENTICATED",
            "ERROR_CODE_UNAUTHENTICATED",
            "ERROR_CODE_EXPIRED",
            "ERROR_CODE_REPLAYED",
        ]
        assert [e["stage"] for e in logged] == ["gate"] * 5
        assert "not signed" in str(logged[0]["reason"])
        assert "bad signature" in str(logged[1]["reason"])
        kinds = [e["kind"] for _, e in read_entries(node.audit.path) if e]
        assert kinds.count("received") == 6 and kinds.count("admitted") == 1
        assert verify(node.audit.path).ok
    finally:
        await node.shutdown()


async def test_a_forged_request_cannot_displace_a_kept_answer(tmp_path: Path) -> None:
    operator = Signer.generate()
    node = secure_node(tmp_path, operator, CountingSource())
    try:
        genuine = signed_request(operator)
        digest = hashlib.sha256(genuine.request).hexdigest()
        kept = federation_pb2.NodeMessage(
            refusal=types_pb2.Refusal(request_id="r1.q", public_message="kept")
        ).SerializeToString()
        node._state.put_outbox("r1.q", kept, digest)
        # Same claimed id, other bytes, no valid signature: refused, and the kept answer stays.
        forged = await answer(node, signed_request(None))
        assert forged.refusal.code == types_pb2.ERROR_CODE_UNAUTHENTICATED
        assert node._state.pending() == [("r1.q", kept)]
        # The genuine request delivered again is a duplicate: it gets the kept answer.
        again = await answer(node, genuine)
        assert again.SerializeToString() == kept
        assert [e["kind"] for _, e in read_entries(node.audit.path) if e][-1] == "resent"
    finally:
        await node.shutdown()


async def test_a_policy_refusal_is_logged_with_its_stage(tmp_path: Path) -> None:
    from carrier_node.policy import Policy

    operator = Signer.generate()
    source = CountingSource()
    node = secure_node(
        tmp_path, operator, source, policy=Policy(metrics=("enrollment.member_months",))
    )
    try:
        reply = await answer(node, signed_request(operator))
        assert reply.refusal.code == types_pb2.ERROR_CODE_POLICY_REFUSED
        assert refusals(node)[-1]["stage"] == "policy"
        assert source.calls == 0
    finally:
        await node.shutdown()


async def test_a_node_with_unusable_data_answers_once_the_files_are_fixed(
    tmp_path: Path,
) -> None:
    from tests.unit.test_datasource import valid_tables, write_directory, write_table

    operator = Signer.generate()
    node = secure_node(tmp_path, operator, CountingSource())
    node.data.source = None  # the node's own file source over its data directory
    data = tmp_path / "data"
    tables = valid_tables()
    write_directory(data, "csv", tables)
    broken = [{k: v for k, v in row.items() if k != "member_id"} for row in tables["eligibility"]]
    write_table(data, "eligibility", broken, "csv")
    sent: asyncio.Queue[federation_pb2.NodeMessage | None] = asyncio.Queue()
    node.connection.outgoing = sent
    try:
        await node.open_source()  # as the daemon does once, at start
        await node.answering.answer(signed_request(operator, request_id="r1.a"))
        reply = sent.get_nowait()
        assert reply is not None and reply.refusal.code == types_pb2.ERROR_CODE_DATA_SOURCE
        assert refusals(node)[-1]["stage"] == "data source"
        write_table(data, "eligibility", tables["eligibility"], "csv")  # fixed, no restart
        await node.answering.answer(signed_request(operator, request_id="r1.b"))
        reply = sent.get_nowait()
        assert reply is not None and reply.HasField("result"), reply
    finally:
        await node.shutdown()


def test_a_secure_node_needs_a_result_signing_key(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    config = NodeConfig(
        carrier_id="c001",
        coordinator="127.0.0.1:1",
        data_dir=tmp_path / "data",
        state_dir=tmp_path / "state",
        operator_public_key=tmp_path / "op.pub",
        tls=TlsFiles(ca_cert=tmp_path / "a", cert=tmp_path / "b", key=tmp_path / "c"),
    )
    with pytest.raises(ConfigError, match="result_signing_key"):
        NodeDaemon(config)


def test_unexpected_decoding_failures_are_refusals(tmp_path: Path) -> None:
    operator = Signer.generate()
    node = secure_node(tmp_path, operator, CountingSource())
    try:
        huge = sign(b"\x00" * (4 * 1024 * 1024 + 1), operator)
        with pytest.raises(InvalidRequestError):
            node.admit(huge)
        garbage = sign(b"\xff\xfe\xfd", operator)
        with pytest.raises(InvalidRequestError):
            node.admit(garbage)
        assert [e["stage"] for e in refusals(node)] == ["gate", "gate"]
    finally:
        asyncio.run(node.shutdown())


# --- receipts -------------------------------------------------------------------------------


class Link:
    def __init__(self) -> None:
        self.sent: list[tuple[str, federation_pb2.CoordinatorMessage]] = []

    def is_connected(self, carrier_id: str) -> bool:
        return True

    def send(self, carrier_id: str, message: federation_pb2.CoordinatorMessage) -> bool:
        self.sent.append((carrier_id, message))
        return True


def signed_result(data: bytes, signer: Signer) -> types_pb2.SignedResult:
    return types_pb2.SignedResult(result=data, signature=signer.sign(data), key_id=signer.key_id)


async def test_tampered_or_forged_results_are_rejected_and_receipts_reverify(
    tmp_path: Path,
) -> None:
    operator = Signer.generate()
    keys = {"c001": Signer.generate(), "c002": Signer.generate()}
    store = RoundStore(tmp_path / "rounds.sqlite3")
    for c in keys:
        store.upsert_carrier(c)
    link = Link()
    rounds = RoundManager(
        store,
        link,
        signer=operator,
        node_verifiers={c: k.verifier for c, k in keys.items()},
    )
    try:
        spec = rounds.build_request(
            Period.parse("2026-01"), [wire.make_query("enrollment.member_months")], list(keys)
        )
        signed = rounds.sign(spec)
        record = await rounds.create_round(signed, list(keys), deadline_seconds=60)
        data = {c: result_for(spec, bytes(signed.request), c) for c in keys}
        # Tampered in transit: a number changed after the node signed.
        tampered = signed_result(data["c001"], keys["c001"])
        tampered.result = tampered.result.replace(b"\xb0\t", b"\xb1\t")
        assert tampered.result != data["c001"]
        await rounds.on_result("c001", tampered)
        # Forged: c002's answer signed with c001's key, and c001 claiming c002's answer.
        await rounds.on_result("c002", signed_result(data["c002"], keys["c001"]))
        await rounds.on_result("c001", signed_result(data["c002"], keys["c001"]))
        # Unsigned.
        await rounds.on_result("c002", types_pb2.SignedResult(result=data["c002"]))
        assert store.results(record.round_id) == []
        assert not any(m.HasField("ack") for _, m in link.sent)
        # The genuine answers are stored and acknowledged.
        for c, key in keys.items():
            await rounds.on_result(c, signed_result(data[c], key))
        states = {s.carrier_id: s.state for s in store.carrier_rounds(record.round_id)}
        assert states == {c: CarrierRoundState.ANSWERED for c in keys}
        verifiers = {c: k.verifier for c, k in keys.items()}
        outcome = verify_round(
            store,
            record.round_id,
            operator_verifier=operator.verifier,
            node_verifiers=verifiers,
        )
        assert outcome.ok and len(outcome.receipts) == 2
        assert {r.data_snapshot for r in outcome.receipts} == {"snap-c001", "snap-c002"}
        # Someone edits a stored receipt afterwards: the re-check names that carrier.
        raw = sqlite3.connect(tmp_path / "rounds.sqlite3")
        row = raw.execute("SELECT result_bytes FROM results WHERE carrier_id = 'c002'").fetchone()
        raw.execute(
            "UPDATE results SET result_bytes = ? WHERE carrier_id = 'c002'",
            (bytes(row[0]).replace(b"snap-c002", b"snap-c00X"),),
        )
        raw.commit()
        raw.close()
        outcome = verify_round(
            store,
            record.round_id,
            operator_verifier=operator.verifier,
            node_verifiers=verifiers,
        )
        bad = [r for r in outcome.receipts if not r.ok]
        assert not outcome.ok and [(r.carrier_id, r.reason) for r in bad] == [
            ("c002", "bad signature")
        ]
        # And with the wrong operator key, the request itself does not verify.
        wrong = verify_round(
            store,
            record.round_id,
            operator_verifier=Signer.generate().verifier,
            node_verifiers=verifiers,
        )
        assert not wrong.request_ok
        await cli_verify(tmp_path, store, record.round_id, operator, keys)
    finally:
        await rounds.close()
        store.close()


async def cli_verify(
    tmp_path: Path, store: RoundStore, round_id: str, operator: Signer, keys: dict[str, Signer]
) -> None:
    """``oversight round verify`` reads the store and the keys named in the config."""
    keys_dir = tmp_path / "carrier-keys"
    keys_dir.mkdir()
    for c, k in keys.items():
        (keys_dir / f"{c}.pub").write_bytes(k.verifier.public_pem())
    (tmp_path / "operator.pub").write_bytes(operator.verifier.public_pem())
    config = tmp_path / "coordinator.toml"
    config.write_text(
        'store_path = "rounds.sqlite3"\noperator_public_key = "operator.pub"\n'
        'result_keys_dir = "carrier-keys"\n'
        'carriers = [{id = "c001"}, {id = "c002"}]\n'
        '[tls]\nca_cert = "ca.crt"\ncert = "c.crt"\nkey = "c.key"\n'
    )
    result = await asyncio.to_thread(
        CliRunner().invoke, oversight_app, ["round", "verify", round_id, "--config", str(config)]
    )
    assert result.exit_code == 5, result.output  # EXIT_INVALID: a receipt does not hold
    assert "INVALID" in result.output and "bad signature" in result.output
    assert json.dumps(round_id)[1:-1] in result.output


async def test_a_refusal_for_a_closed_round_is_acknowledged_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A node's late refusal (e.g. a reviewer's rejection after the deadline) is acknowledged,
    so the node stops resending it, and the closed round is left as it was."""
    store = RoundStore(tmp_path / "rounds.sqlite3")
    store.upsert_carrier("c001")
    link = Link()
    rounds = RoundManager(store, link, signer=Signer.generate())
    try:
        await rounds.on_refusal(
            "c001",
            types_pb2.Refusal(
                request_id="r-20261202000000-0000abcd.q",
                round_id="r-20261202000000-0000abcd",
                code=types_pb2.ERROR_CODE_POLICY_REFUSED,
                public_message="rejected",
            ),
        )
        acks = [m.ack.request_id for c, m in link.sent if c == "c001" and m.HasField("ack")]
        assert acks == ["r-20261202000000-0000abcd.q"]
        # A malformed id is not echoed back.
        await rounds.on_refusal("c001", types_pb2.Refusal(request_id="x'; DROP", round_id=""))
        assert len(link.sent) == 1
        assert store.list_rounds() == []
    finally:
        await rounds.close()
