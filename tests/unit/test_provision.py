"""Provisioning: a CA, the coordinator's identity and config, operators, carrier start-up kits."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from carrier_node.config import load_node_config
from carrier_node.policy import Policy
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
data_dir = "/srv/fed/c002/tables"
state_dir = "/srv/fed/c002/state"

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
    # What nodes dial, and what the operator CLI dials by default (127.0.0.1:50051, localhost).
    assert set(san.get_values_for_type(x509.DNSName)) == {"oversight.example.gov", "localhost"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
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
    # Loopback unless the plan says otherwise, on the port the nodes dial.
    assert config.listen == "127.0.0.1:8443"
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
    # A carrier kit holds its identity, the CA, the operator's public key (under tls/, as a
    # host's /etc/fedoversight/tls), a node config and a policy beside it.
    kit = done.carriers["c001"]
    assert kit.cert is not None and kit.key is not None
    assert {p.name for p in (kit.cert, kit.key, kit.ca_cert, kit.operator_public_key)} == {
        "node.crt",
        "node.key",
        "ca.crt",
        "operator-signing.pub",
    }
    assert {p.parent for p in (kit.cert, kit.key, kit.ca_cert, kit.operator_public_key)} == {
        kit.directory / "tls"
    }
    info = check_identity_files(kit.cert, kit.key)
    assert info.common_name == "c001"
    assert is_issued_by(load_certificate(kit.cert), ca)
    node = load_node_config(kit.node_config)
    assert node.carrier_id == "c001" and node.coordinator == "oversight.example.gov:8443"
    assert node.insecure is False and node.tls is not None
    assert node.tls.cert == kit.cert and node.operator_public_key == kit.operator_public_key
    assert node.result_signing_key == kit.result_signing_key
    # The carrier's data and state are on its host, outside the kit: the plan's or the defaults.
    assert node.data_dir == Path("/srv/carrier-data")
    assert node.state_dir == Path("/var/lib/carrier-node")
    assert node.policy_file == kit.policy == kit.directory / "policy.toml"
    assert Policy.load(node.policy_file).min_cell_size == 11
    other = load_node_config(done.carriers["c002"].node_config)
    assert other.data_dir == Path("/srv/fed/c002/tables")
    assert other.state_dir == Path("/srv/fed/c002/state")
    # An operator's kit says how to point the CLI at it.
    alice_kit = done.operators["alice"]
    assert alice_kit.env_file is not None
    env = dict(
        line.split("=", 1)
        for line in alice_kit.env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env == {
        "OVERSIGHT_ADDRESS": "127.0.0.1:8443",
        "OVERSIGHT_CA_CERT": str(alice_kit.ca_cert.resolve()),
        "OVERSIGHT_CERT": str(alice_kit.cert.resolve()),
        "OVERSIGHT_KEY": str(alice_kit.key.resolve()),
        "OVERSIGHT_TOKEN_FILE": str(alice_kit.token.resolve()),
    }
    assert "OVERSIGHT_TOKEN_FILE" not in done.operators["bob"].env_file.read_text()  # type: ignore[union-attr]
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
    assert (
        kit.cert is None and kit.key is None and not (kit.directory / "tls" / "node.key").exists()
    )
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
    relative = tmp_path / "relative.toml"
    relative.write_text('[[carriers]]\nid = "c1"\ndata_dir = "data"\n')
    with pytest.raises(ConfigError, match="absolute"):
        load_plan(relative)
    no_port = tmp_path / "no-port.toml"
    no_port.write_text('coordinator_address = "oversight.example.gov"\n[[carriers]]\nid = "c1"\n')
    with pytest.raises(ConfigError, match="host:port"):
        load_plan(no_port)


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
    assert "operator.env" in result.output


def test_cli_provision_sets_listen_data_dir_and_owner(tmp_path: Path) -> None:
    plan = tmp_path / "carriers.txt"
    plan.write_text("c001\n")
    out = tmp_path / "kit"
    uid, gid = os.getuid(), os.getgid()
    args = [
        "provision",
        "--carriers",
        str(plan),
        "--out",
        str(out),
        "--listen",
        "0.0.0.0:50051",
        "--data-dir",
        "/srv/claims",
        "--state-dir",
        "/var/lib/node-c001",
        "--owner",
        f"{uid}:{gid}",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_coordinator_config(out / "coordinator" / "coordinator.toml").listen == (
        "0.0.0.0:50051"
    )
    node = load_node_config(out / "carriers" / "c001" / "node.toml")
    assert node.data_dir == Path("/srv/claims")
    assert node.state_dir == Path("/var/lib/node-c001")
    for path in [*(out / "coordinator").rglob("*"), *(out / "carriers").rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid)
    key = out / "carriers" / "c001" / "tls" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600  # handing over keeps the mode
    bad = CliRunner().invoke(app, [*args[:3], "--out", str(tmp_path / "bad"), "--owner", "me"])
    assert bad.exit_code == 1 and "UID:GID" in bad.output
    relative = CliRunner().invoke(
        app, [*args[:3], "--out", str(tmp_path / "rel"), "--data-dir", "claims"]
    )
    assert relative.exit_code == 1 and "absolute" in relative.output


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_cli_provision_gives_the_daemons_kits_to_the_image_user(tmp_path: Path) -> None:
    plan = tmp_path / "carriers.txt"
    plan.write_text("c001\n")
    out = tmp_path / "kit"
    args = ["provision", "--carriers", str(plan), "--out", str(out), "--owner", "10001:10001"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "coordinator" / "coordinator.key").stat().st_uid == 10001
    assert (out / "carriers" / "c001" / "tls" / "result-signing.key").stat().st_uid == 10001
    # The CA and the operators' kits stay with whoever provisioned.
    assert (out / "ca" / "ca.key").stat().st_uid == 0
    assert (out / "operators" / "operator" / "operator.key").stat().st_uid == 0


def test_a_plan_with_offices_writes_them_and_each_operators_office(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[carriers]]\nid = "c001"\n\n'
        '[[offices]]\nname = "actuarial"\npurposes = ["plan-cost-oversight"]\n\n'
        '[[offices]]\nname = "quality"\npurposes = ["quality-oversight"]\n\n'
        '[[operators]]\nname = "alice"\noffice = "actuarial"\n\n'
        '[[operators]]\nname = "quinn"\nrole = "viewer"\noffice = "quality"\n'
    )
    done = provision(load_plan(plan), tmp_path / "out")
    config = load_coordinator_config(done.coordinator_config)
    assert {o.name: o.purposes for o in config.offices} == {
        "actuarial": ("plan-cost-oversight",),
        "quality": ("quality-oversight",),
    }
    assert {o.name: o.office for o in config.operators} == {
        "alice": "actuarial",
        "quinn": "quality",
    }
    # With offices, every operator names one of them.
    plan.write_text(
        '[[carriers]]\nid = "c001"\n\n'
        '[[offices]]\nname = "actuarial"\npurposes = ["plan-cost-oversight"]\n\n'
        '[[operators]]\nname = "alice"\n'
    )
    with pytest.raises(ConfigError, match="offices"):
        provision(load_plan(plan), tmp_path / "again")
