"""Config loading: precedence and path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrier_node.config import load_node_config
from coordinator.config import load_coordinator_config, split_host_port
from fedoversight.errors import ConfigError

NODE = """
carrier_id = "c001"
coordinator = "coord:50051"
data_dir = "data"
operator_public_key = "keys/operator.pub"
[tls]
ca_cert = "keys/ca.crt"
cert = "keys/node.crt"
key = "keys/node.key"
"""


def test_relative_paths_are_relative_to_the_file_even_in_nested_tables(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(NODE)
    config = load_node_config(path)
    assert config.data_dir == tmp_path / "data"
    assert config.operator_public_key == tmp_path / "keys/operator.pub"
    assert config.tls is not None and config.tls.ca_cert == tmp_path / "keys/ca.crt"


def test_flag_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node.toml"
    path.write_text(NODE)
    monkeypatch.setenv("CARRIER_NODE_COORDINATOR", "from-env:1")
    assert load_node_config(path).coordinator == "from-env:1"
    assert load_node_config(path, coordinator="from-flag:2").coordinator == "from-flag:2"


def test_unknown_keys_and_insecure_defaults_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(NODE + "\nheartbeat_secs = 3\n")
    with pytest.raises(ConfigError):
        load_node_config(path)
    plain = tmp_path / "plain.toml"
    plain.write_text('carrier_id = "c001"\ncoordinator = "x:1"\ndata_dir = "d"\n')
    with pytest.raises(ConfigError):
        load_node_config(plain)  # neither TLS nor an explicit insecure flag
    coord = tmp_path / "coordinator.toml"
    coord.write_text("auto_register = true\n")
    with pytest.raises(ConfigError):
        load_coordinator_config(coord)  # auto-registration only in insecure demos


def test_a_node_reads_exactly_one_data_source(tmp_path: Path) -> None:
    both = tmp_path / "both.toml"
    both.write_text(NODE + '\n[warehouse]\ndbname = "claims"\nschema_name = "carrier"\n')
    with pytest.raises(ConfigError):
        load_node_config(both)
    warehouse_only = tmp_path / "wh.toml"
    warehouse_only.write_text(
        NODE.replace('data_dir = "data"\n', "")
        + '\n[warehouse]\ndbname = "claims"\nschema_name = "carrier"\n'
        + 'password_file = "secrets/pg"\n'
    )
    config = load_node_config(warehouse_only)
    assert config.warehouse is not None and config.data_dir is None
    assert config.warehouse.password_file == tmp_path / "secrets/pg"


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("[::1]:0", "::1", 0),
        ("metrics.local:80", "metrics.local", 80),
    ],
)
def test_the_metrics_address_is_host_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str, host: str, port: int
) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text("insecure = true\n")
    assert load_coordinator_config(path).metrics_address is None  # off by default
    monkeypatch.setenv("OVERSIGHT_METRICS_ADDRESS", address)
    config = load_coordinator_config(path)
    assert config.metrics_address == address
    assert split_host_port(address) == (host, port)


@pytest.mark.parametrize(
    "address", ["9464", "127.0.0.1", ":9464", "127.0.0.1:65536", "::1:9464", "host:port", "a b:1"]
)
def test_a_metrics_address_not_host_and_port_is_refused(tmp_path: Path, address: str) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text(f'insecure = true\nmetrics_address = "{address}"\n')
    with pytest.raises(ConfigError, match="metrics_address"):
        load_coordinator_config(path)
