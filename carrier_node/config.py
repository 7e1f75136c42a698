"""The node daemon's configuration (one TOML file; flags > CARRIER_NODE_* env > file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from carrier_node.data.control_totals import ControlTotals
from carrier_node.data.validation import CsvEncoding
from carrier_node.data.warehouse import WarehouseConfig
from fedoversight.config import load_config
from fedoversight.dimensions import Dimension, accepts


class TlsFiles(BaseModel):
    """Mutual TLS material from the carrier's start-up kit (or its own PKI)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: Path = Field(description="CA certificate that signed the coordinator's certificate")
    cert: Path = Field(description="this node's certificate (its identity)")
    key: Path = Field(description="this node's private key")
    server_name: str | None = Field(
        default=None, description="name to expect in the coordinator's certificate"
    )


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    carrier_id: str = Field(description="this carrier's id, as registered at the coordinator")
    coordinator: str = Field(description="coordinator address host:port to dial out to")
    warehouse: WarehouseConfig | None = Field(
        default=None, description="the carrier's PostgreSQL warehouse, instead of data_dir"
    )
    data_dir: Path | None = Field(
        default=None,
        description="directory of the data schema's tables: each a file NAME.parquet, NAME.csv,"
        " NAME.csv.gz or NAME.csv.zst, or a directory NAME/ of such files (partitions)",
    )
    csv_encoding: CsvEncoding = Field(
        default="auto",
        description="how data_dir's CSV files are encoded: utf-8, latin-1, utf-16, or auto"
        " (UTF-8, else UTF-16 when the header reads so, else Latin-1)",
    )
    policy_file: Path | None = Field(
        default=None, description="the carrier's disclosure policy (TOML); defaults when absent"
    )
    control_totals_file: Path | None = Field(
        default=None,
        description="monthly claim counts and paid dollars of the carrier's financial reporting"
        " (TOML), compared with the data by `check` and ops.data_quality",
    )
    state_dir: Path = Field(
        default=Path("node-state"), description="where the node keeps its outbox and nonce log"
    )
    insecure: bool = Field(
        default=False, description="plaintext and unsigned requests: local demos only"
    )
    tls: TlsFiles | None = Field(default=None, description="mutual TLS files")
    operator_public_key: Path | None = Field(
        default=None, description="operator signing key (public half) requests must carry"
    )
    result_signing_key: Path | None = Field(
        default=None,
        description="this node's Ed25519 key that signs its results (from the start-up kit);"
        " required to serve unless insecure",
    )
    audit_log: Path | None = Field(
        default=None,
        description="the hash-chained audit log (default: state_dir/CARRIER_ID.audit.jsonl)",
    )
    audit_fsync: bool = Field(default=True, description="sync the audit log to disk on every entry")
    stream_max_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description="deadline of one stream to the coordinator; the node then reconnects",
    )
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="heartbeat interval")
    reconnect_min_seconds: float = Field(default=0.5, gt=0, description="first retry delay")
    reconnect_max_seconds: float = Field(default=30.0, gt=0, description="longest retry delay")
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="largest message sent or accepted"
    )
    max_request_age_seconds: float = Field(
        default=3600.0, gt=0, description="oldest issued_at accepted (with expiry and nonce)"
    )
    engine_threads: int | None = Field(default=None, ge=1, description="DuckDB threads")
    engine_memory_limit: str | None = Field(default=None, description="DuckDB memory limit")
    max_concurrent_requests: int = Field(
        default=2,
        ge=1,
        description="requests evaluated at once; with two or more, one slot is kept for light"
        " requests, so a heavy one never holds up a trivial one",
    )
    max_queued_requests: int = Field(
        default=16, ge=0, description="requests waiting for a slot; one more is refused as busy"
    )
    light_request_cells: int = Field(
        default=5_000,
        ge=0,
        description="a request of at most this many estimated cells is light (see"
        " max_concurrent_requests)",
    )
    max_evaluation_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="the longest the node spends on one request, whatever its deadline",
    )
    deadline_margin_seconds: float = Field(
        default=2.0,
        ge=0,
        description="kept back from a request's deadline for signing, keeping and sending",
    )
    shutdown_grace_seconds: float = Field(
        default=6.0,
        gt=0,
        description="on SIGTERM, how long evaluations under way have to stop and be recorded",
    )

    @field_validator("carrier_id")
    @classmethod
    def _carrier_id(cls, value: str) -> str:
        if not accepts(Dimension.CARRIER, value):
            raise ValueError("carrier_id must be lowercase letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _secure_or_explicit(self) -> NodeConfig:
        if not self.insecure and (self.tls is None or self.operator_public_key is None):
            raise ValueError(
                "tls and operator_public_key are required unless insecure = true (demos only)"
            )
        if (self.data_dir is None) == (self.warehouse is None):
            raise ValueError("give exactly one data source: data_dir or [warehouse]")
        return self


def audit_log_path(config: NodeConfig) -> Path:
    return config.audit_log or config.state_dir / f"{config.carrier_id}.audit.jsonl"


def disclosure_secret_path(state_dir: Path, carrier_id: str) -> Path:
    """Where the node keeps its disclosure secret (see carrier_node.disclosure.secret)."""
    return state_dir / f"{carrier_id}.disclosure-secret.json"


def load_control_totals(config: NodeConfig) -> ControlTotals:
    """The control totals the config names (none when it names no file)."""
    if config.control_totals_file is None:
        return ControlTotals()
    return ControlTotals.load(config.control_totals_file)


def load_node_config(path: Path | None, **overrides: object) -> NodeConfig:
    return load_config(NodeConfig, path, env_prefix="CARRIER_NODE_", overrides=overrides)
