"""The PostgreSQL round store: its configuration, its schema, and what a managed database
adds (a server out of reach, a connection lost). The store's behaviour itself is tested on
both backends in test_store.py."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from coordinator.cli import app as oversight_app
from coordinator.config import CoordinatorConfig, PostgresStore, load_coordinator_config
from coordinator.store import RoundStore, open_round_store
from coordinator.store_postgres import PostgresBackend, redacted
from fedoversight.errors import ConfigError
from tests import postgres

SECRET = "hunter2-not-for-logs"
#: Nothing listens on port 1: a server out of reach, refused at once.
UNREACHABLE = f"postgresql://oversight:{SECRET}@127.0.0.1:1/rounds"


def _config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "coordinator.toml"
    path.write_text(f'insecure = true\nlisten = "127.0.0.1:0"\n{store}\n')
    return path


def test_the_store_is_sqlite_unless_round_store_names_a_database(tmp_path: Path) -> None:
    assert load_coordinator_config(_config(tmp_path, "")).round_store is None
    cfg = load_coordinator_config(_config(tmp_path, f'round_store = "{UNREACHABLE}"'))
    assert cfg.round_store is not None
    assert cfg.round_store.url.get_secret_value() == UNREACHABLE
    assert cfg.round_store.schema_name == "fedoversight"
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.model_dump())
    table = (
        '[round_store]\nurl = "host=db.example.org dbname=rounds user=oversight"\n'
        'schema_name = "federation_a"\npassword_file = "secrets/pg-password"\n'
    )
    cfg = load_coordinator_config(_config(tmp_path, table))
    assert cfg.round_store is not None
    assert cfg.round_store.schema_name == "federation_a"
    assert cfg.round_store.password_file == tmp_path / "secrets" / "pg-password"
    monkey = {"OVERSIGHT_ROUND_STORE": UNREACHABLE}
    from fedoversight.config import load_config

    cfg = load_config(
        CoordinatorConfig, _config(tmp_path, ""), env_prefix="OVERSIGHT_", environ=monkey
    )
    assert cfg.round_store is not None and cfg.round_store.schema_name == "fedoversight"


@pytest.mark.parametrize(
    "store",
    [
        f'round_store = "mysql://oversight:{SECRET}@db/rounds"',
        f'round_store = "host=db password={SECRET} dbname"',
        f'[round_store]\nurl = "{UNREACHABLE}"\nschema_name = "Robert\'); DROP"',
        f'[round_store]\nurl = "{UNREACHABLE}"\nport = 5432',
    ],
    ids=["other-database", "broken-key-value", "schema-name", "unknown-key"],
)
def test_a_bad_round_store_is_refused_without_echoing_the_url(tmp_path: Path, store: str) -> None:
    with pytest.raises(ConfigError, match="round_store") as caught:
        load_coordinator_config(_config(tmp_path, store))
    assert SECRET not in str(caught.value)


def test_redacted_connection_strings_name_the_server_not_the_password() -> None:
    assert redacted(UNREACHABLE) == "postgresql://oversight@127.0.0.1:1/rounds"
    assert SECRET not in redacted(f"host=db port=6432 dbname=r password={SECRET}")


def test_an_unreachable_database_is_a_config_error_naming_the_server_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password_file = tmp_path / "pg-password"
    password_file.write_text(SECRET + "\n")
    for config in (
        PostgresStore(url=SecretStr(UNREACHABLE), connect_timeout_seconds=2),
        PostgresStore(
            url=SecretStr("postgresql://oversight@127.0.0.1:1/rounds"),
            password_file=password_file,
            connect_timeout_seconds=2,
        ),
    ):
        with pytest.raises(
            ConfigError, match=r"round store at postgresql://oversight@127\.0\.0\.1:1/rounds"
        ):
            PostgresBackend(config)
    with pytest.raises(ConfigError, match="password_file"):
        PostgresBackend(
            PostgresStore(url=SecretStr(UNREACHABLE), password_file=tmp_path / "missing")
        )
    assert SECRET not in caplog.text


def test_serve_says_why_without_a_traceback_when_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, f'round_store = "{UNREACHABLE}"')
    result = CliRunner().invoke(oversight_app, ["serve", "--config", str(config)])
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert "cannot connect to the round store at postgresql://oversight@127.0.0.1:1" in output
    assert "Connection refused" in output
    assert "Traceback" not in output and SECRET not in output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture
def pg_config() -> Iterator[PostgresStore]:
    with postgres.fresh_schema() as schema:
        yield PostgresStore(url=SecretStr(postgres.DSN), schema_name=schema)


@pytest.mark.postgres
def test_tables_live_in_their_own_schema_and_commits_are_durable(pg_config: PostgresStore) -> None:
    cfg = CoordinatorConfig(insecure=True, round_store=pg_config)
    with open_round_store(cfg) as store, store.backend.reading() as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] == "on"
    RoundStore(PostgresBackend(pg_config)).close()  # reopening adds no second version row
    with postgres.connect() as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " ORDER BY table_name",
            (pg_config.schema_name,),
        ).fetchall()
        assert [t[0] for t in tables] == [
            "carrier_rounds",
            "carriers",
            "late_results",
            "results",
            "rounds",
            "scheduled_rounds",
            "schema_version",
        ]
        versions = con.execute(
            f'SELECT version FROM "{pg_config.schema_name}".schema_version'
        ).fetchall()
        assert versions == [(1,)]


@pytest.mark.postgres
def test_a_lost_connection_is_opened_again_by_the_next_call(pg_config: PostgresStore) -> None:
    """A failover or an idle timeout ends the session: the call seeing it fails, the next
    one connects again."""
    with RoundStore(PostgresBackend(pg_config)) as store:
        store.upsert_carrier("acme", "Acme Health")
        with store.backend.reading() as conn:
            pid = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        with postgres.connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with contextlib.suppress(psycopg.OperationalError):
            store.carriers()  # the call that finds the session gone may fail
        assert store.carriers() == [("acme", "Acme Health")]
        store.upsert_carrier("blue")
        assert store.carriers() == [("acme", "Acme Health"), ("blue", "")]


@pytest.mark.postgres
def test_times_come_back_in_utc(pg_config: PostgresStore) -> None:
    from tests.unit.test_store import _round

    eastern = dt.timezone(dt.timedelta(hours=-5))
    record = _round()
    local = type(record)(**{**record.__dict__, "created_at": record.created_at.astimezone(eastern)})
    with RoundStore(PostgresBackend(pg_config)) as store:
        stored = store.create_round(local, ["acme"])
    assert stored.created_at == record.created_at
    assert stored.created_at.tzinfo is dt.UTC
