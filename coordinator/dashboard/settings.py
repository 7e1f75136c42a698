"""The dashboard's settings: ``dashboard.toml``, ``OVERSIGHT_DASHBOARD_*`` variables, flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedoversight.config import load_config


class DashboardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    coordinator: str = Field(
        default="127.0.0.1:50051",
        description="the coordinator's operator API (its operator_listen address, where bearer"
        " tokens are accepted without a client certificate)",
    )
    ca: Path | None = Field(
        default=None,
        description="CA certificate the coordinator's is checked against (none: plaintext, for a"
        " local insecure demo only)",
    )
    server_name: str | None = Field(
        default=None, description="name expected in the coordinator's certificate"
    )
    listen: str = Field(default="127.0.0.1:8080", description="where the dashboard serves HTTP")
    idle_minutes: float = Field(default=30.0, gt=0, description="a session ends after this idle")
    max_sessions: int = Field(default=1000, ge=1, description="signed-in sessions kept at most")

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("listen is HOST:PORT (port 0: any free port)")
        return value

    @field_validator("ca")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no CA certificate at {value}")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


def load_dashboard_config(path: Path | None, **overrides: object) -> DashboardConfig:
    return load_config(
        DashboardConfig, path, env_prefix="OVERSIGHT_DASHBOARD_", overrides=overrides
    )
