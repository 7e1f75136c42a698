"""Provisioning: a CA, the coordinator's identity and config, operators, carrier start-up kits."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from carrier_node.config import load_node_config
from coordinator.cli import app
from coordinator.config import Role, load_coordinator_config
from coordinator.provision import Authority, cert_pem, key_pem, load_plan, provision
from fedoversight.errors import ConfigError
from fedoversight.signing import Signer, Verifier
from fedoversight.tls import check_identity_files, fingerprint, is_issued_by, load_certificate

PLAN = """
coordinator_id = "agency"
coordinator_address = "oversight.example.gov:8443"
coordinator_names = ["127.0.0.1"]

[[carriers]]
id = "c001"
name = "Carrier One"

[[carriers]]
id = "c002"

[[carriers]]
id = "c003"
cert = "own/c003.crt"
ca_cert = "own/c003-ca.crt"

[[operators]]
name = "alice"
role = "operator"
token = true

[[operators]]
name = "bob"
role = "viewer"
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    own = tmp_path / "own"
    own.mkdir()
    carrier_ca = Authority.create("carrier three's own CA")
    cert, key = carrier_ca.issue("c003")
    (own / "c003.crt").write_bytes(cert_pem(cert))
    (own / "c003.key").write_bytes(key_pem(key))
    (own / "c003-ca.crt").write_bytes(cert_pem(carrier_ca.cert))
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


def test_a_federation_is_provisioned_with_kits_that_load(
    plan_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    done = provision(load_plan(plan_file), tmp_path / "out")
    ca = load_certificate(done.ca_cert)
    # The coordinator's certificate names what nodes dial, and chains to the CA.
    server = load_certificate(done.coordinator_cert)
    assert is_issued_by(server, ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "oversight.example.gov" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    check_identity_files(done.coordinator_cert, done.coordinator_key)
    # Every secret is private to its owner; public halves are not.
    secrets = [done.ca_key, done.coordinator_key, done.operator_signing_key]
    for kit in done.carriers.values():
        secrets += [p for p in (kit.key, kit.result_signing_key) if p is not None]
    for op in done.operators.values():
        secrets += [p for p in (op.key, op.token) if p is not None]
    assert len(secrets) == 3 + 2 * 2 + 1 + 2 + 1
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # The coordinator config loads and names every carrier's result key and the operators.
    config = load_coordinator_config(done.coordinator_config)
    assert config.insecure is False and config.tls is not None
    assert {c.id for c in config.carriers} == {"c001", "c002", "c003"}
    for entry in config.carriers:
        key_path = config.result_key_path(entry)
        assert key_path is not None
        assert (
            Verifier.load(key_path).key_id
            == Verifier.load(done.carriers[entry.id].result_public_key).key_id
        )
    roles = {o.name: o.role for o in config.operators}
    assert roles == {"alice": Role.OPERATOR, "bob": Role.VIEWER}
    alice = next(o for o in config.operators if o.name == "alice")
    assert alice.token_sha256 is not None and done.operators["alice"].token is not None
    assert (
        Signer.load(config.operator_signing_key).key_id
        == Verifier.load(  # type: ignore[arg-type]
            done.operator_public_key
        ).key_id
    )
    # A carrier kit holds its identity, the CA, the operator's public key and a node config.
    kit = done.carriers["c001"]
    assert kit.cert is not None and kit.key is not None
    info = check_identity_files(kit.cert, kit.key)
    assert info.common_name == "c001"
    assert is_issued_by(load_certificate(kit.cert), ca)
    node = load_node_config(kit.node_config)
    assert node.carrier_id == "c001" and node.coordinator == "oversight.example.gov:8443"
    assert node.insecure is False and node.tls is not None
    assert node.tls.cert == kit.cert and node.operator_public_key == kit.operator_public_key
    assert node.result_signing_key == kit.result_signing_key
    assert (
        Verifier.load(kit.operator_public_key).key_id
        == Signer.load(done.operator_signing_key).key_id
    )
    # Keys never reach the log.
    assert "PRIVATE KEY" not in caplog.text and "BEGIN" not in caplog.text


def test_a_carrier_with_its_own_pki_is_pinned_and_its_ca_trusted(
    plan_file: Path, tmp_path: Path
) -> None:
    done = provision(load_plan(plan_file), tmp_path / "out")
    kit = done.carriers["c003"]
    assert kit.cert is None and kit.key is None and not (kit.directory / "node.key").exists()
    config = load_coordinator_config(done.coordinator_config)
    entry = next(c for c in config.carriers if c.id == "c003")
    own = load_certificate(plan_file.parent / "own" / "c003.crt")
    assert entry.cert_sha256 == fingerprint(own)
    assert all(c.cert_sha256 is None for c in config.carriers if c.id != "c003")
    bundle = x509.load_pem_x509_certificates(done.trust_bundle.read_bytes())
    assert len(bundle) == 2
    assert bundle[0] == load_certificate(done.ca_cert)  # the federation CA comes first
    assert is_issued_by(own, bundle[1])
    assert "own PKI" in kit.node_config.read_text()


def test_provisioning_refuses_to_overwrite_and_bad_plans(plan_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    provision(load_plan(plan_file), out)
    with pytest.raises(ConfigError, match="not empty"):
        provision(load_plan(plan_file), out)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[carriers]]\nid = "Not An Id"\n')
    with pytest.raises(ConfigError):
        load_plan(bad)
    clash = tmp_path / "clash.toml"
    clash.write_text('[[carriers]]\nid = "c1"\n[[operators]]\nname = "c1"\n')
    with pytest.raises(ConfigError, match="share its name"):
        provision(load_plan(clash), tmp_path / "clash")
    mismatched = tmp_path / "mismatch.toml"
    mismatched.write_text(
        '[[carriers]]\nid = "c009"\ncert = "own/c003.crt"\nca_cert = "own/c003-ca.crt"\n'
    )
    with pytest.raises(ConfigError, match="does not name it"):
        provision(load_plan(mismatched), tmp_path / "mismatch")


def test_a_plain_list_of_carriers_is_a_plan(tmp_path: Path) -> None:
    path = tmp_path / "carriers.txt"
    path.write_text("# id, name\nc001, Carrier One\nc002\n\n")
    plan = load_plan(path)
    assert [(c.id, c.name) for c in plan.carriers] == [("c001", "Carrier One"), ("c002", "")]
    assert [o.name for o in plan.operators] == ["operator"]


def test_expired_or_mismatched_identity_files_are_named(tmp_path: Path) -> None:
    ca = Authority.create("ca")
    now = dt.datetime.now(dt.UTC)
    old, old_key = ca.issue("c001", now=now - dt.timedelta(days=30), days=10)
    (tmp_path / "old.crt").write_bytes(cert_pem(old))
    (tmp_path / "old.key").write_bytes(key_pem(old_key))
    with pytest.raises(ConfigError, match="expired on"):
        check_identity_files(tmp_path / "old.crt", tmp_path / "old.key")
    fresh, _ = ca.issue("c001")
    (tmp_path / "fresh.crt").write_bytes(cert_pem(fresh))
    with pytest.raises(ConfigError, match="does not belong"):
        check_identity_files(tmp_path / "fresh.crt", tmp_path / "old.key")


def test_cli_provision_prints_paths_never_keys(tmp_path: Path) -> None:
    plan = tmp_path / "carriers.txt"
    plan.write_text("c001\nc002\n")
    result = CliRunner().invoke(
        app,
        [
            "provision",
            "--carriers",
            str(plan),
            "--out",
            str(tmp_path / "kit"),
            "--coordinator-address",
            "127.0.0.1:50051",
            "--coordinator-name",
            "localhost",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "PRIVATE" not in result.output and "BEGIN" not in result.output
    assert (tmp_path / "kit" / "carriers" / "c002" / "node.toml").exists()
    node = load_node_config(tmp_path / "kit" / "carriers" / "c002" / "node.toml")
    assert node.coordinator == "127.0.0.1:50051"
