"""The coordinator's configuration (one TOML file; flags > OVERSIGHT_* env > file)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fedoversight.config import load_config
from fedoversight.dimensions import Dimension, accepts
from fedoversight.tls import normalise_serial

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_SQL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_HOST_PORT = re.compile(
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]):(?P<port>[0-9]{1,5})"
)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` as (host, port), an IPv6 host without its brackets."""
    found = _HOST_PORT.fullmatch(address)
    if found is None or int(found["port"]) > 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9464 ([::1]:9464 for IPv6)")
    return found["host"].strip("[]"), int(found["port"])


def _sha256_hex(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = value.strip().lower().replace(":", "")
    if not _SHA256_HEX.fullmatch(cleaned):
        raise ValueError("must be a SHA-256 digest in hex (64 characters)")
    return cleaned


class ServerTls(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: Path = Field(description="CA that signed the carriers' (and operators') certificates")
    cert: Path = Field(description="the coordinator's certificate")
    key: Path = Field(description="the coordinator's private key")


class CarrierEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="carrier id; with TLS, the common name of its certificate")
    name: str = Field(default="", description="display name")
    result_public_key: Path | None = Field(
        default=None,
        description="the node's result-signing key, public half (PEM, Ed25519); default"
        " result_keys_dir/ID.pub. Give an absolute path: paths in this list are not resolved"
        " against the config file",
    )
    cert_sha256: str | None = Field(
        default=None,
        description="pin: SHA-256 of the carrier's certificate (DER), for carriers using their"
        " own PKI; unpinned carriers must hold a certificate of the federation CA",
    )

    @field_validator("id")
    @classmethod
    def _carrier_id(cls, value: str) -> str:
        if not accepts(Dimension.CARRIER, value):
            raise ValueError("carrier id must be lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("cert_sha256")
    @classmethod
    def _pin(cls, value: str | None) -> str | None:
        return _sha256_hex(value)


class PostgresStore(BaseModel):
    """The round store in a PostgreSQL database (instead of the SQLite file at store_path)."""

    # A validation error must not echo the URL: it may hold a password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: SecretStr = Field(
        description="libpq connection URI or key=value string, e.g."
        " postgresql://oversight@db.example.org:5432/oversight?sslmode=verify-full; keep the"
        " password out of it (password_file, PGPASSWORD or ~/.pgpass)"
    )
    schema_name: str = Field(
        default="fedoversight",
        description="schema holding the store's tables (created when missing); one per federation",
    )
    password_file: Path | None = Field(
        default=None, description="file holding the password (else libpq's PGPASSWORD/.pgpass)"
    )
    connect_timeout_seconds: int = Field(default=10, gt=0, description="per connection attempt")

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: Any) -> Any:
        """``round_store = "postgresql://..."``: the URL alone, the rest by default."""
        return {"url": data} if isinstance(data, str) else data

    @field_validator("url")
    @classmethod
    def _conninfo(cls, value: SecretStr) -> SecretStr:
        try:
            conninfo_to_dict(value.get_secret_value())
        except psycopg.Error:
            # libpq's message quotes the string: it is not passed on.
            raise ValueError(
                "not a PostgreSQL connection URI (postgresql://...) or key=value string"
            ) from None
        return value

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        if not _SQL_NAME.fullmatch(value):
            raise ValueError("schema_name: lowercase letters, digits and '_', not first a digit")
        return value


class Role(StrEnum):
    """What an operator API caller may do."""

    #: Runs rounds, and reads everything a viewer reads.
    OPERATOR = "operator"
    #: Reads rounds, results, carriers and metrics.
    VIEWER = "viewer"


class OperatorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the common name of the operator's client certificate")
    role: Role = Field(description="operator (runs rounds) or viewer (reads results)")
    token_sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of a bearer token that authenticates this operator instead"
        " of its certificate's name; the token itself stays in a file on the operator's side",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("operator name: letters, digits, '_', '.', '@' or '-'")
        return value

    @field_validator("token_sha256")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return _sha256_hex(value)


class CoordinatorConfig(BaseModel):
    # Inputs are kept out of validation errors: round_store's URL may hold a password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    coordinator_id: str = Field(default="coordinator", description="name shown to nodes")
    listen: str = Field(
        default="127.0.0.1:50051",
        description="address for nodes and operators: with TLS every caller presents a client"
        " certificate (mutual TLS)",
    )
    operator_listen: str | None = Field(
        default=None,
        description="optional second address serving only the operator API (with health and"
        " reflection) to operators holding a bearer token: TLS there authenticates the"
        " coordinator only (no client certificate is asked for), so operators with a"
        " certificate use the main address",
    )
    health_listen: str | None = Field(
        default=None,
        description="optional address serving only the gRPC health service, in plaintext, for"
        " probes that cannot show a client certificate (Kubernetes gRPC probes); it tells"
        " whether the coordinator is serving and nothing else",
    )
    store_path: Path = Field(
        default=Path("oversight.sqlite3"),
        description="round store: the SQLite file (unless round_store is set)",
    )
    round_store: PostgresStore | None = Field(
        default=None,
        description="keep the round store in PostgreSQL instead: a connection URL, or a table"
        " with url, schema_name, password_file, connect_timeout_seconds",
    )
    carriers: tuple[CarrierEntry, ...] = Field(default=(), description="the carrier registry")
    auto_register: bool = Field(
        default=False, description="accept any carrier id that says hello (insecure demos only)"
    )
    insecure: bool = Field(default=False, description="plaintext: local demos only")
    tls: ServerTls | None = Field(default=None, description="mutual TLS files")
    operator_signing_key: Path | None = Field(
        default=None, description="Ed25519 key that signs requests built by the coordinator"
    )
    operator_public_key: Path | None = Field(
        default=None,
        description="public half of the operator key, to check requests operators sign"
        " themselves (derived from operator_signing_key when absent)",
    )
    operators: tuple[OperatorEntry, ...] = Field(
        default=(), description="who may use the operator API, and in which role"
    )
    result_keys_dir: Path | None = Field(
        default=None, description="directory of the carriers' result-signing keys as ID.pub"
    )
    revoked_serials: tuple[str, ...] = Field(
        default=(), description="serials (hex) of revoked certificates, refused on every call"
    )
    revocation_file: Path | None = Field(
        default=None,
        description="more revoked serials, one per line ('#' comments); re-read when changed",
    )
    default_deadline_seconds: int = Field(default=300, gt=0, description="round deadline")
    heartbeat_seconds: int = Field(default=10, gt=0, description="node heartbeat interval")
    disconnect_grace_seconds: float = Field(
        default=5.0, ge=0, description="how long a dropped carrier may take to come back mid-round"
    )
    hello_timeout_seconds: float = Field(default=10.0, gt=0, description="wait for a node hello")
    request_ttl_seconds: int = Field(default=3600, gt=0, description="request validity window")
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="largest message accepted or sent"
    )
    schedule: Path | None = Field(
        default=None,
        description="schedule file (TOML) of the suites the coordinator runs by itself each"
        " month (docs/scheduling.md); they are signed with operator_signing_key",
    )
    metrics_address: str | None = Field(
        default=None,
        description="host:port serving Prometheus metrics at /metrics over plain HTTP (off"
        " when unset); keep it on loopback (127.0.0.1:9464) or a network only the monitoring"
        " system reaches: the figures are counts and ids-free, but unauthenticated",
    )

    @model_validator(mode="after")
    def _secure_or_explicit(self) -> CoordinatorConfig:
        if not self.insecure and self.tls is None:
            raise ValueError("tls is required unless insecure = true (demos only)")
        if self.auto_register and not self.insecure:
            raise ValueError("auto_register is only for insecure local demos")
        carriers = [c.id for c in self.carriers]
        if len(set(carriers)) != len(carriers):
            raise ValueError("a carrier id is registered twice")
        names = [o.name for o in self.operators]
        if len(set(names)) != len(names):
            raise ValueError("an operator name is listed twice")
        if set(names) & set(carriers):
            raise ValueError("an operator may not share its name with a carrier")
        return self

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    @field_validator("revoked_serials")
    @classmethod
    def _serials(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalise_serial(s) for s in value)

    def result_key_path(self, entry: CarrierEntry) -> Path | None:
        """Where a carrier's result-signing public key is, or None when none is configured."""
        if entry.result_public_key is not None:
            return entry.result_public_key
        if self.result_keys_dir is not None:
            path = self.result_keys_dir / f"{entry.id}.pub"
            if path.exists():
                return path
        return None


def load_coordinator_config(path: Path | None, **overrides: object) -> CoordinatorConfig:
    return load_config(CoordinatorConfig, path, env_prefix="OVERSIGHT_", overrides=overrides)
