"""Provisioning: a certificate authority, the coordinator's identity, the operator signing key,
operators' client identities and a start-up kit per carrier.

``oversight provision --carriers FILE --out DIR`` writes::

    DIR/ca/                      ca.crt, ca.key (keep the CA key offline)
    DIR/coordinator/             coordinator.toml, ca.crt (trust bundle), coordinator.crt/.key,
                                 operator-signing.key/.pub, carrier-keys/ID.pub
    DIR/operators/NAME/          ca.crt, operator.crt/.key, token (when asked for),
                                 operator.env (the OVERSIGHT_* settings of the operator CLI)
    DIR/carriers/ID/             node.toml, policy.toml (a starting point), and tls/: ca.crt,
                                 node.crt/.key, result-signing.key/.pub, operator-signing.pub

Every kit runs where it lies: its configs name their files relative to themselves. A carrier
kit is laid out as a host's ``/etc/fedoversight`` (``deploy/systemd/carrier-node.service``
reads ``/etc/fedoversight/node.toml``); its ``node.toml`` names the carrier's data and state
directories as absolute paths on that host (the plan's, by default ``/srv/carrier-data`` and
``/var/lib/carrier-node``), never inside the kit. The coordinator listens on loopback unless the
plan says otherwise, and its certificate names ``127.0.0.1`` and ``localhost`` (what the
operator CLI dials by default) besides the plan's address and names.

A carrier may bring its own certificate (and the CA that issued it): the kit then holds no
certificate or key, the coordinator trusts that CA and pins that certificate's fingerprint, so
the carrier's CA cannot vouch for anyone else. Keys use ECDSA P-256 for TLS and Ed25519 for
signatures; private keys are written with mode 0600 and never printed or logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import secrets
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coordinator.config import OfficeEntry, Role
from coordinator.provision_k8s import write_k8s_kit
from fedoversight.dimensions import Dimension, accepts
from fedoversight.errors import ConfigError
from fedoversight.signing import Signer, Verifier
from fedoversight.tls import fingerprint, load_certificate, load_certificates

log = logging.getLogger(__name__)

#: Certificates start a little in the past so a skewed clock does not refuse a fresh one.
BACKDATE = dt.timedelta(minutes=5)
#: Names every coordinator certificate carries: what the operator CLI dials by default
#: (``127.0.0.1:50051``) and its usual spelling on the coordinator's host.
LOCAL_NAMES = ("127.0.0.1", "localhost")
#: Where a carrier's node reads its tables and keeps its state unless the plan says otherwise:
#: the paths of ``deploy/systemd/carrier-node.service``.
DEFAULT_DATA_DIR = Path("/srv/carrier-data")
DEFAULT_STATE_DIR = Path("/var/lib/carrier-node")


# --- the plan (the --carriers file) ---------------------------------------------------------


class CarrierPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="carrier id (the common name of its certificate)")
    name: str = Field(default="", description="display name")
    cert: Path | None = Field(default=None, description="the carrier's own certificate (PEM)")
    ca_cert: Path | None = Field(default=None, description="the CA that issued its own cert")
    result_public_key: Path | None = Field(
        default=None, description="the carrier's own result-signing key, public half (PEM)"
    )
    data_dir: Path | None = Field(
        default=None,
        description="where this carrier's node reads its tables, on its own host (absolute;"
        " default: the plan's data_dir)",
    )
    state_dir: Path | None = Field(
        default=None,
        description="where this carrier's node keeps its state, on its own host (absolute;"
        " default: the plan's state_dir)",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not accepts(Dimension.CARRIER, value):
            raise ValueError("carrier id must be lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("data_dir", "state_dir")
    @classmethod
    def _host_path(cls, value: Path | None) -> Path | None:
        return None if value is None else _absolute(value)


class OperatorPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="operator name (the common name of its certificate)")
    role: Role = Field(default=Role.OPERATOR, description="operator or viewer")
    token: bool = Field(default=False, description="also issue a bearer token file")
    office: str | None = Field(
        default=None, description="its office (one of the plan's offices, when it has any)"
    )


class ProvisionPlan(BaseModel):
    """What to provision; read from the ``--carriers`` TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coordinator_id: str = Field(default="coordinator", description="the coordinator's name")
    coordinator_address: str = Field(
        default="localhost:50051", description="host:port the nodes dial"
    )
    coordinator_names: tuple[str, ...] = Field(
        default=(),
        description="DNS names / IP addresses in the coordinator's certificate"
        " (the address's host, 127.0.0.1 and localhost are always included)",
    )
    listen: str | None = Field(
        default=None,
        description="the coordinator's listen address host:port (default: 127.0.0.1 and the"
        " port of coordinator_address; 0.0.0.0:PORT to listen on every interface)",
    )
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="where each carrier's node reads its tables, on the carrier's host",
    )
    state_dir: Path = Field(
        default=DEFAULT_STATE_DIR,
        description="where each carrier's node keeps its state, on the carrier's host",
    )
    valid_days: int = Field(default=397, gt=0, description="validity of issued certificates")
    ca_valid_days: int = Field(default=3650, gt=0, description="validity of the CA")
    carriers: tuple[CarrierPlan, ...] = Field(description="the carriers to provision")
    operators: tuple[OperatorPlan, ...] = Field(
        default=(OperatorPlan(name="operator"),), description="operator API identities"
    )
    offices: tuple[OfficeEntry, ...] = Field(
        default=(),
        description="the agency's offices and the purposes each is entitled to (docs/purpose.md)",
    )

    @field_validator("coordinator_address", "listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("an address is host:port")
        return value

    @field_validator("data_dir", "state_dir")
    @classmethod
    def _host_path(cls, value: Path) -> Path:
        return _absolute(value)

    def subject_names(self) -> tuple[str, ...]:
        host = self.coordinator_address.rsplit(":", 1)[0].strip("[]")
        names = [host, *self.coordinator_names, *LOCAL_NAMES]
        return tuple(dict.fromkeys(n for n in names if n))

    @property
    def port(self) -> str:
        return self.coordinator_address.rsplit(":", 1)[1]

    def listen_address(self) -> str:
        """Where the provisioned coordinator listens: loopback unless the plan says."""
        return self.listen or f"127.0.0.1:{self.port}"


def _absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError("a carrier's data_dir and state_dir are absolute paths on its host")
    return value


def load_plan(path: Path) -> ProvisionPlan:
    """Read a plan: TOML (see :class:`ProvisionPlan`), or plain lines ``id[,display name]``.

    Relative paths in the TOML (own certificates, keys) are relative to the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
            for carrier in data.get("carriers", []):
                for key in ("cert", "ca_cert", "result_public_key"):
                    if isinstance(carrier, dict) and isinstance(carrier.get(key), str):
                        carrier[key] = str(path.parent / carrier[key])
        else:
            rows = [ln.split(",", 1) for ln in text.splitlines()]
            data = {
                "carriers": [
                    {"id": r[0].strip(), "name": r[1].strip() if len(r) > 1 else ""}
                    for r in rows
                    if r[0].strip() and not r[0].lstrip().startswith("#")
                ]
            }
        return ProvisionPlan.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"invalid provisioning plan in {path}: {exc}") from exc


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A certificate authority that can issue certificates (held in memory while provisioning)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls, common_name: str, *, days: int = 3650, now: dt.datetime | None = None
    ) -> Authority:
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedoversight"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        """An existing CA (``ca/ca.crt`` and ``ca/ca.key`` of a provisioned directory)."""
        cert = load_certificate(cert_path)
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            raise ConfigError(f"cannot load the CA key {key_path.name}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"the CA key {key_path.name} is not an EC key")
        return cls(cert, key)

    def issue(
        self,
        common_name: str,
        *,
        server_names: Sequence[str] = (),
        client: bool = True,
        days: int = 397,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate and its new key: a client identity, or a server one when
        ``server_names`` are given (DNS names or IP addresses)."""
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedoversight"),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256()), key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_public(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_secret(path: Path, data: bytes) -> Path:
    """Write a private key or token readable by its owner only (never over an existing file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


# --- the kits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CarrierKit:
    carrier_id: str
    directory: Path
    node_config: Path
    ca_cert: Path
    #: None when the carrier brings its own certificate.
    cert: Path | None
    key: Path | None
    #: None when the carrier brings its own result-signing key.
    result_signing_key: Path | None
    result_public_key: Path
    operator_public_key: Path
    #: The starting-point disclosure policy beside node.toml (the carrier edits it).
    policy: Path | None = None


@dataclass(frozen=True)
class OperatorKit:
    name: str
    role: Role
    directory: Path
    ca_cert: Path
    cert: Path
    key: Path
    token: Path | None
    #: The operator CLI's settings for this identity (``OVERSIGHT_*`` lines, absolute paths).
    env_file: Path | None = None


@dataclass(frozen=True)
class Provisioned:
    out_dir: Path
    ca_cert: Path
    ca_key: Path
    coordinator_dir: Path
    coordinator_config: Path
    coordinator_cert: Path
    coordinator_key: Path
    #: The federation CA followed by any CA a carrier brought along.
    trust_bundle: Path
    operator_signing_key: Path
    operator_public_key: Path
    result_keys_dir: Path
    carriers: dict[str, CarrierKit]
    operators: dict[str, OperatorKit]


def provision(plan: ProvisionPlan, out: Path, *, now: dt.datetime | None = None) -> Provisioned:
    """Write the CA, the coordinator's identity and config, operator identities and one
    start-up kit per carrier under ``out`` (which must be empty or absent)."""
    now = now or dt.datetime.now(dt.UTC)
    ids = [c.id for c in plan.carriers]
    if not ids:
        raise ConfigError("the plan names no carriers")
    if len(set(ids)) != len(ids):
        raise ConfigError("a carrier id appears twice in the plan")
    if {o.name for o in plan.operators} & set(ids):
        raise ConfigError("an operator may not share its name with a carrier")
    offices = {o.name for o in plan.offices}
    for op in plan.operators:
        if (op.office in offices) != bool(offices):
            raise ConfigError(
                f"operator {op.name}: name one of the plan's offices"
                if offices
                else f"operator {op.name}: an office, but the plan has no offices"
            )
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: refusing to overwrite an existing federation")
    out.mkdir(parents=True, exist_ok=True)

    ca = Authority.create(f"{plan.coordinator_id} federation CA", days=plan.ca_valid_days, now=now)
    ca_dir = out / "ca"
    ca_cert = write_public(ca_dir / "ca.crt", cert_pem(ca.cert))
    ca_key = write_secret(ca_dir / "ca.key", key_pem(ca.key))

    coord_dir = out / "coordinator"
    server_cert, server_key = ca.issue(
        plan.coordinator_id,
        server_names=plan.subject_names(),
        client=False,
        days=plan.valid_days,
        now=now,
    )
    coordinator_cert = write_public(coord_dir / "coordinator.crt", cert_pem(server_cert))
    coordinator_key = write_secret(coord_dir / "coordinator.key", key_pem(server_key))
    operator_signer = Signer.generate()
    operator_signing_key = write_secret(
        coord_dir / "operator-signing.key", operator_signer.private_pem()
    )
    operator_public = operator_signer.verifier.public_pem()
    operator_public_key = write_public(coord_dir / "operator-signing.pub", operator_public)
    keys_dir = coord_dir / "carrier-keys"
    keys_dir.mkdir(parents=True, exist_ok=True)

    bundle = [cert_pem(ca.cert)]
    registry: list[dict[str, str]] = []
    carriers: dict[str, CarrierKit] = {}
    for carrier in plan.carriers:
        kit, entry, extra_ca = _carrier_kit(
            carrier, ca, plan, out / "carriers" / carrier.id, operator_public, keys_dir, now
        )
        carriers[carrier.id] = kit
        registry.append(entry)
        if extra_ca is not None and extra_ca not in bundle:
            bundle.append(extra_ca)
    trust_bundle = write_public(coord_dir / "ca.crt", b"".join(bundle))

    operators: dict[str, OperatorKit] = {}
    operator_entries: list[dict[str, str]] = []
    for op in plan.operators:
        op_kit = _operator_kit(op, ca, out / "operators" / op.name, plan, now)
        operators[op.name] = op_kit
        op_entry = {"name": op.name, "role": str(op.role)}
        if op.office is not None:
            op_entry["office"] = op.office
        if op_kit.token is not None:
            token = op_kit.token.read_bytes().strip()
            op_entry["token_sha256"] = hashlib.sha256(token).hexdigest()
        operator_entries.append(op_entry)

    config = {
        "coordinator_id": plan.coordinator_id,
        "listen": plan.listen_address(),
        "store_path": "rounds.sqlite3",
        "insecure": False,
        "operator_signing_key": "operator-signing.key",
        "operator_public_key": "operator-signing.pub",
        "result_keys_dir": "carrier-keys",
        "revoked_serials": [],
        "carriers": registry,
        "operators": operator_entries,
        "tls": {"ca_cert": "ca.crt", "cert": "coordinator.crt", "key": "coordinator.key"},
    }
    if plan.offices:
        config["offices"] = [o.model_dump(mode="json") for o in plan.offices]
    coordinator_config = write_public(
        coord_dir / "coordinator.toml",
        _COORDINATOR_HEADER.encode() + tomli_w.dumps(config).encode(),
    )
    log.info(
        "provisioned a CA, the coordinator, %d carriers and %d operators",
        len(carriers),
        len(operators),
    )
    done = Provisioned(
        out_dir=out,
        ca_cert=ca_cert,
        ca_key=ca_key,
        coordinator_dir=coord_dir,
        coordinator_config=coordinator_config,
        coordinator_cert=coordinator_cert,
        coordinator_key=coordinator_key,
        trust_bundle=trust_bundle,
        operator_signing_key=operator_signing_key,
        operator_public_key=operator_public_key,
        result_keys_dir=keys_dir,
        carriers=carriers,
        operators=operators,
    )
    write_k8s_kit(done)
    return done


def _carrier_kit(
    carrier: CarrierPlan,
    ca: Authority,
    plan: ProvisionPlan,
    kit_dir: Path,
    operator_public: bytes,
    keys_dir: Path,
    now: dt.datetime,
) -> tuple[CarrierKit, dict[str, str], bytes | None]:
    entry = {"id": carrier.id, "name": carrier.name}
    extra_ca: bytes | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    tls_dir = kit_dir / "tls"
    if carrier.cert is None:
        cert, key = ca.issue(carrier.id, days=plan.valid_days, now=now)
        cert_path = write_public(tls_dir / "node.crt", cert_pem(cert))
        key_path = write_secret(tls_dir / "node.key", key_pem(key))
    else:
        own = load_certificate(carrier.cert)
        names = own.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != carrier.id:
            raise ConfigError(f"the certificate given for {carrier.id} does not name it (CN)")
        if carrier.ca_cert is None:
            raise ConfigError(f"{carrier.id} brings its own certificate: give its ca_cert too")
        extra_ca = b"".join(cert_pem(c) for c in load_certificates(carrier.ca_cert))
        entry["cert_sha256"] = fingerprint(own)
    signing_key: Path | None = None
    if carrier.result_public_key is None:
        signer = Signer.generate()
        signing_key = write_secret(tls_dir / "result-signing.key", signer.private_pem())
        public = signer.verifier.public_pem()
    else:
        public = Verifier.load(carrier.result_public_key).public_pem()
    result_public = write_public(tls_dir / "result-signing.pub", public)
    write_public(keys_dir / f"{carrier.id}.pub", public)
    ca_cert = write_public(tls_dir / "ca.crt", cert_pem(ca.cert))
    operator_key = write_public(tls_dir / "operator-signing.pub", operator_public)
    policy = write_public(kit_dir / "policy.toml", _POLICY.encode())
    node = {
        "carrier_id": carrier.id,
        "coordinator": plan.coordinator_address,
        "data_dir": str(carrier.data_dir or plan.data_dir),
        "policy_file": "policy.toml",
        "state_dir": str(carrier.state_dir or plan.state_dir),
        "insecure": False,
        "operator_public_key": "tls/operator-signing.pub",
        "result_signing_key": "tls/result-signing.key",
        "tls": {"ca_cert": "tls/ca.crt", "cert": "tls/node.crt", "key": "tls/node.key"},
    }
    header = _NODE_HEADER.format(carrier=carrier.id, data_dir=node["data_dir"])
    if carrier.cert is not None:
        header += _OWN_CERT_NOTE
    if carrier.result_public_key is not None:
        header += _OWN_RESULT_KEY_NOTE
    node_config = write_public(
        kit_dir / "node.toml", header.encode() + tomli_w.dumps(node).encode()
    )
    kit = CarrierKit(
        carrier_id=carrier.id,
        directory=kit_dir,
        node_config=node_config,
        ca_cert=ca_cert,
        cert=cert_path,
        key=key_path,
        result_signing_key=signing_key,
        result_public_key=result_public,
        operator_public_key=operator_key,
        policy=policy,
    )
    return kit, entry, extra_ca


def _operator_kit(
    op: OperatorPlan, ca: Authority, kit_dir: Path, plan: ProvisionPlan, now: dt.datetime
) -> OperatorKit:
    cert, key = ca.issue(op.name, days=plan.valid_days, now=now)
    token = None
    if op.token:
        token = write_secret(kit_dir / "token", secrets.token_urlsafe(32).encode())
    ca_cert = write_public(kit_dir / "ca.crt", cert_pem(ca.cert))
    cert_path = write_public(kit_dir / "operator.crt", cert_pem(cert))
    key_path = write_secret(kit_dir / "operator.key", key_pem(key))
    return OperatorKit(
        name=op.name,
        role=op.role,
        directory=kit_dir,
        ca_cert=ca_cert,
        cert=cert_path,
        key=key_path,
        token=token,
        env_file=write_public(
            kit_dir / "operator.env", operator_env(plan, ca_cert, cert_path, key_path, token)
        ),
    )


def operator_env(
    plan: ProvisionPlan, ca_cert: Path, cert: Path, key: Path, token: Path | None
) -> bytes:
    """The operator CLI's environment for one identity: ``set -a; . operator.env; set +a``.

    The address is the coordinator's port on loopback, as on the coordinator's own host; from
    elsewhere set ``OVERSIGHT_ADDRESS`` to the coordinator's address (its certificate names
    the plan's address and names too)."""
    lines = [
        "# The operator CLI's settings (flags override them). Paths are where provisioning",
        "# wrote them: change them if the kit moves. Load with: set -a; . ./operator.env; set +a",
        f"OVERSIGHT_ADDRESS=127.0.0.1:{plan.port}",
        f"OVERSIGHT_CA_CERT={ca_cert.resolve()}",
        f"OVERSIGHT_CERT={cert.resolve()}",
        f"OVERSIGHT_KEY={key.resolve()}",
    ]
    if token is not None:
        lines.append(f"OVERSIGHT_TOKEN_FILE={token.resolve()}")
    return ("\n".join(lines) + "\n").encode()


def hand_over(done: Provisioned, uid: int, gid: int) -> list[Path]:
    """Give the coordinator's and the carriers' kits to ``uid:gid`` (the user the daemons run
    as, e.g. 10001 in the images), keeping each file's mode; the CA and the operators' kits stay
    the provisioning user's. Needs the right to chown (root)."""
    handed: list[Path] = []
    roots = [done.coordinator_dir, *(kit.directory for kit in done.carriers.values())]
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))]:
            try:
                os.chown(path, uid, gid)
            except PermissionError:
                raise ConfigError(f"cannot give {path} to {uid}:{gid}: run as root") from None
            handed.append(path)
    return handed


_COORDINATOR_HEADER = """\
# Coordinator config written by `oversight provision`. Paths are relative to this file.
# Mutual TLS: carriers and operators must hold a certificate of the CA in ca.crt; a carrier's
# identity is its certificate's common name, checked against `carriers` below. Revoke a
# certificate by adding its serial (hex) to revoked_serials (or to a revocation_file).
# `listen` is the plan's, or loopback: set it (or OVERSIGHT_LISTEN, or `oversight serve
# --listen`) to an address the carriers reach. Operators list who may use the operator API.

"""

_NODE_HEADER = """\
# Start-up kit for carrier {carrier}, written by `oversight provision`. Relative paths are
# relative to this file: install this directory as /etc/fedoversight (the paths of
# deploy/systemd/carrier-node.service), or run it where it lies. data_dir and state_dir are
# paths on the carrier's host, outside the kit. Check the data, then start:
#     carrier-node check --data {data_dir}
#     carrier-node serve --config node.toml
# tls/node.key and tls/result-signing.key are this carrier's secrets: keep them 0600 (0640
# root:carrier-node under systemd), never share them.

"""

_POLICY = """\
# The carrier's disclosure policy (docs/disclosure.md; every key is explained in
# deploy/systemd/policy.example.toml). The carrier decides: edit before the first start.
# Check it, and its digest, with: carrier-node policy show --policy policy.toml

min_cell_size = 11
release_mode = "auto"
"""

_OWN_CERT_NOTE = """\
# This carrier uses its own PKI: put its certificate and key at tls/node.crt and tls/node.key
# (the coordinator pins that certificate's fingerprint).

"""

_OWN_RESULT_KEY_NOTE = """\
# This carrier brought its own result-signing key: point result_signing_key at its private half.

"""
