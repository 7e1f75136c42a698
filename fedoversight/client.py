"""The analysts' client for notebooks: ``from fedoversight.client import Client``.

``Client`` (synchronous, Jupyter-safe) and ``AsyncClient`` run rounds on the coordinator's
operator API and return typed tidy pandas DataFrames with each round's metadata in ``attrs``;
docs/analysts.md walks through a session. They are the agency side's: this module only
re-exports :mod:`coordinator.pandas_client`, so the import contracts in pyproject.toml let it
(and nothing else in this package) import the coordinator, and keep the carrier node from
importing it.
"""

from __future__ import annotations

from coordinator.pandas_client import (
    CARRIER_COLUMNS,
    METRIC_COLUMNS,
    REVISION_COLUMNS,
    ROUND_COLUMNS,
    SUITE_COLUMNS,
    AsyncClient,
    Client,
    Connection,
    ForbiddenError,
    Identity,
    Progress,
    RoundOutcome,
    build_query,
    connection_from_env,
)
from fedoversight.errors import (
    AuthenticationError,
    CoordinatorUnavailableError,
    InvalidRequestError,
    NotFoundError,
    OversightError,
    UnknownMetricError,
)

__all__ = [
    "CARRIER_COLUMNS",
    "METRIC_COLUMNS",
    "REVISION_COLUMNS",
    "ROUND_COLUMNS",
    "SUITE_COLUMNS",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "Connection",
    "CoordinatorUnavailableError",
    "ForbiddenError",
    "Identity",
    "InvalidRequestError",
    "NotFoundError",
    "OversightError",
    "Progress",
    "RoundOutcome",
    "UnknownMetricError",
    "build_query",
    "connection_from_env",
]
