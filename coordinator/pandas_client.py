"""The analysts' client: rounds and their results as typed pandas DataFrames, for notebooks.

:class:`AsyncClient` speaks to the coordinator's operator API with the operator's own
credentials (those of ``oversight round run``); :class:`Client` is its synchronous twin. Every
result is a typed tidy frame (:func:`coordinator.frames.round_frame`: one row per scope, cell
and statistic or figure) carrying the round's metadata in ``frame.attrs``. Analysts import them
as ``fedoversight.client`` (docs/analysts.md walks through a session).

The synchronous client runs its async twin on a private event loop in a thread of its own, so
it works where the caller's thread already runs a loop (a Jupyter kernel) and where none runs
(a script). Every failure is an :class:`~fedoversight.errors.OversightError`; a gRPC error
never reaches the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import difflib
import logging
import os
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import grpc
import pandas as pd

from coordinator import convert, frames
from coordinator.access import ForbiddenError
from coordinator.client import Identity, OperatorClient, Progress, RoundOutcome
from coordinator.store import RoundState
from fedoversight import catalogue, wire
from fedoversight.dimensions import Dimension
from fedoversight.domain import QuerySpec
from fedoversight.errors import (
    AuthenticationError,
    ConfigError,
    CoordinatorUnavailableError,
    InvalidRequestError,
    OversightError,
    UnknownMetricError,
    from_rpc_error,
)
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.v1 import operator_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A round's deadline when none is given (seconds), as ``oversight round run``'s.
DEFAULT_DEADLINE = 300
#: Rounds :meth:`AsyncClient.rounds` and :meth:`AsyncClient.trend` look through by default.
DEFAULT_ROUNDS = 50
#: Rounds whose results are fetched at once by :meth:`AsyncClient.results_many`.
FETCH_CONCURRENCY = 4
#: The states of a round that has finished (its tables will not change).
FINISHED = frozenset({RoundState.COMPLETE, RoundState.PARTIAL, RoundState.FAILED})

#: The operator kit's settings (``operator.env``, written by ``oversight provision``) and the
#: :class:`AsyncClient` argument each one gives; the CLI reads the same variables.
ENV_SETTINGS = {
    "OVERSIGHT_ADDRESS": "address",
    "OVERSIGHT_CA_CERT": "ca_cert",
    "OVERSIGHT_CERT": "cert",
    "OVERSIGHT_KEY": "key",
    "OVERSIGHT_TOKEN_FILE": "token_file",
    "OVERSIGHT_SERVER_NAME": "server_name",
    "OVERSIGHT_SIGNING_KEY": "signing_key",
}
_PATH_SETTINGS = frozenset({"ca_cert", "cert", "key", "token_file", "signing_key"})

#: Columns of :meth:`AsyncClient.rounds`, with their dtypes (``suite`` and ``scheduled_for``:
#: NA for a round an operator created; see docs/scheduling.md).
ROUND_COLUMNS: dict[str, str] = {
    "round_id": "string",
    "created_at": "datetime64[ns, UTC]",
    "finished_at": "datetime64[ns, UTC]",
    "period": "string",
    "first_month": "datetime64[ns]",
    "last_month": "datetime64[ns]",
    "state": "string",
    "carriers_asked": "Int64",
    "carriers_answered": "Int64",
    "metrics": "string",
    "suite": "string",
    "scheduled_for": "datetime64[ns, UTC]",
}
#: Columns of :meth:`AsyncClient.revisions`: one row per revision of a month in a suite.
REVISION_COLUMNS: dict[str, str] = {
    "suite": "string",
    "month": "datetime64[ns]",
    "revision": "Int64",
    "latest": "boolean",
    "round_id": "string",
    "scheduled_for": "datetime64[ns, UTC]",
    "finished_at": "datetime64[ns, UTC]",
    "state": "string",
}
#: Columns :meth:`AsyncClient.suite_results` adds after a round frame's own.
SUITE_COLUMNS: dict[str, str] = {
    "suite": "string",
    "revision": "Int64",
    "latest": "boolean",
    "scheduled_for": "datetime64[ns, UTC]",
}
#: Columns of :meth:`AsyncClient.carriers`.
CARRIER_COLUMNS: dict[str, str] = {
    "carrier_id": "string",
    "display_name": "string",
    "connected": "boolean",
    "catalogue_version": "string",
    "node_version": "string",
    "last_seen": "datetime64[ns, UTC]",
}
#: Columns of :meth:`AsyncClient.metrics` (lists are comma-separated names).
METRIC_COLUMNS: dict[str, str] = {
    "metric": "string",
    "metric_version": "Int64",
    "title": "string",
    "dimensions": "string",
    "group_by_one_of": "string",
    "statistics": "string",
    "figures": "string",
    "parameters": "string",
    "definition": "string",
}

By = str | Sequence[str]
Filters = Mapping[str, str | Iterable[str]]


@dataclass(frozen=True)
class Connection:
    """How a client reaches the coordinator: the operator CLI's connection options."""

    #: The coordinator's address, ``host:port`` (its operator port for a token alone).
    address: str
    #: The CA certificate the coordinator's certificate is checked against (None: plaintext,
    #: for insecure demos only).
    ca_cert: Path | None = None
    #: The operator's client certificate and its key (mutual TLS).
    cert: Path | None = None
    key: Path | None = None
    #: A file holding a bearer token (on the coordinator's operator port, instead of a
    #: certificate).
    token_file: Path | None = None
    #: The operator signing key: rounds are signed here rather than at the coordinator.
    signing_key: Path | None = None
    #: The name expected in the coordinator's certificate, when not the address's host.
    server_name: str | None = None


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an env file (``operator.env``): comments, blank lines and
    ``export`` prefixes allowed, values optionally quoted."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{path}:{number}: not a KEY=VALUE line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out


def connection_from_env(
    env_file: str | Path | None = None, **overrides: str | Path | None
) -> Connection:
    """The connection an operator kit describes: the arguments given, over the ``OVERSIGHT_*``
    variables of the environment, over those of ``env_file`` (as for the CLI, where flags beat
    the environment). Relative paths in the file are relative to the file's directory."""
    environ = os.environ
    settings: dict[str, str | Path] = {}
    if env_file is not None:
        path = Path(env_file).expanduser()
        for name, value in read_env_file(path).items():
            field = ENV_SETTINGS.get(name)
            if field is None or not value:
                continue
            if field in _PATH_SETTINGS:
                settings[field] = path.parent / Path(value).expanduser()
            else:
                settings[field] = value
    for name, field in ENV_SETTINGS.items():
        if environ.get(name):
            value = environ[name]
            settings[field] = Path(value).expanduser() if field in _PATH_SETTINGS else value
    unknown = set(overrides) - set(ENV_SETTINGS.values())
    if unknown:
        raise ConfigError(f"unknown connection setting(s): {', '.join(sorted(unknown))}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    address = settings.pop("address", None)
    if not address:
        where = f" in {env_file}" if env_file is not None else ""
        raise ConfigError(f"no coordinator address: set OVERSIGHT_ADDRESS{where} or pass address=")
    paths = {k: Path(v) for k, v in settings.items() if k in _PATH_SETTINGS}
    server_name = settings.get("server_name")
    return Connection(
        address=str(address), server_name=str(server_name) if server_name else None, **paths
    )


class AsyncClient:
    """The operator API as an analyst uses it, with results as typed DataFrames.

    ``AsyncClient(address, ca_cert=..., cert=..., key=...)`` connects as the CLI does (mutual
    TLS); ``token_file`` sends a bearer token (on the coordinator's operator port it is enough
    on its own); ``signing_key`` signs each round on this side. :meth:`from_env` reads an
    operator kit's ``operator.env``. Use it as ``async with``, or call :meth:`close`.
    """

    def __init__(
        self,
        address: str,
        *,
        ca_cert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token_file: str | Path | None = None,
        signing_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> None:
        def path(value: str | Path | None) -> Path | None:
            return None if value is None else Path(value).expanduser()

        self.connection = Connection(
            address=address,
            ca_cert=path(ca_cert),
            cert=path(cert),
            key=path(key),
            token_file=path(token_file),
            signing_key=path(signing_key),
            server_name=server_name,
        )
        if ca_cert is None:
            log.warning(
                "no CA certificate: plaintext connection to %s (insecure demos only)", address
            )
        signing = self.connection.signing_key
        self._operator = OperatorClient(
            address,
            ca_cert=self.connection.ca_cert,
            cert=self.connection.cert,
            key=self.connection.key,
            token_file=self.connection.token_file,
            server_name=server_name,
            signer=Signer.load(signing) if signing is not None else None,
        )

    @classmethod
    def from_env(
        cls,
        env_file: str | Path | None = None,
        **overrides: str | Path | None,
    ) -> AsyncClient:
        """A client from an operator kit: ``env_file`` (the ``operator.env`` that ``oversight
        provision`` writes), the ``OVERSIGHT_*`` environment variables over it, and the
        keyword arguments (``address=``, ``token_file=``, ...) over both."""
        return cls._from_connection(connection_from_env(env_file, **overrides))

    @classmethod
    def _from_connection(cls, c: Connection) -> AsyncClient:
        return cls(
            c.address,
            ca_cert=c.ca_cert,
            cert=c.cert,
            key=c.key,
            token_file=c.token_file,
            signing_key=c.signing_key,
            server_name=c.server_name,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.connection.address!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._operator.close()

    # --- running rounds ---------------------------------------------------------------------

    @overload
    async def run(
        self,
        metric: str,
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        version: int = 0,
        parameters: Mapping[str, float] | None = None,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[True] = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame: ...

    @overload
    async def run(
        self,
        metric: str,
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        version: int = 0,
        parameters: Mapping[str, float] | None = None,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[False],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> str: ...

    async def run(
        self,
        metric: str,
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        version: int = 0,
        parameters: Mapping[str, float] | None = None,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame | str:
        """Run one metric in a new round over ``period`` (``"2026-01"``,
        ``"2026-01:2026-06"``, ``"2026Q1"``, ``"2026"``), grouped ``by`` dimensions
        (``"state"``, ``("month", "carrier")``), keeping ``filters`` (``{"state": ["CA",
        "NY"]}``), asking ``carriers`` (all registered ones when empty).

        Waits for the round to finish (at most ``deadline`` seconds) and returns its typed
        frame; with ``wait=False`` returns the round's id at once (then :meth:`watch` and
        :meth:`results`). ``version`` 0 is the catalogue's latest; ``parameters`` are the
        metric's own (see :meth:`metrics`); ``quorum`` is how many carriers must answer (0:
        one)."""
        query = build_query(metric, by, filters, parameters, version)
        return await self._ask(
            [query],
            period,
            carriers,
            quorum,
            deadline,
            purpose=purpose,
            justification=justification,
            wait=wait,
            on_progress=on_progress,
        )

    @overload
    async def run_many(
        self,
        metrics: Sequence[str],
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[True] = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame: ...

    @overload
    async def run_many(
        self,
        metrics: Sequence[str],
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[False],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> str: ...

    async def run_many(
        self,
        metrics: Sequence[str],
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame | str:
        """Several metrics (their latest versions) in one round, each grouped by ``by`` and
        kept to ``filters``: one frame, told apart by its ``metric`` column. A metric that
        must group by one of a set of dimensions gets the first of them when ``by`` names
        none (as on the command line)."""
        if isinstance(metrics, str):
            metrics = [m for m in metrics.split(",") if m.strip()]
        if not metrics:
            raise InvalidRequestError("name at least one metric")
        queries = [build_query(m, by, filters, None, 0) for m in metrics]
        return await self._ask(
            queries,
            period,
            carriers,
            quorum,
            deadline,
            purpose=purpose,
            justification=justification,
            wait=wait,
            on_progress=on_progress,
        )

    async def _ask(
        self,
        queries: Sequence[QuerySpec],
        period: str | Period,
        carriers: Sequence[str],
        quorum: int,
        deadline: int,
        *,
        purpose: str = "",
        justification: str = "",
        wait: bool,
        on_progress: Callable[[Progress], None] | None,
    ) -> pd.DataFrame | str:
        span = period if isinstance(period, Period) else Period.parse(period)
        if isinstance(carriers, str):
            carriers = [c for c in carriers.split(",") if c.strip()]
        if deadline <= 0:
            raise InvalidRequestError("a round's deadline is a positive number of seconds")
        round_id = await self._call(
            self._operator.create_round(
                span,
                queries,
                carriers=list(carriers),
                quorum=quorum,
                deadline_seconds=deadline,
                purpose=purpose,
                justification=justification,
            )
        )
        if not wait:
            return round_id
        async for progress in self.watch(round_id, timeout=deadline + 60):
            if on_progress is not None:
                on_progress(progress)
        return await self.results(round_id)

    async def watch(
        self, round_id: str, timeout: float = DEFAULT_DEADLINE + 60
    ) -> AsyncIterator[Progress]:
        """The round's progress, one :class:`Progress` per change, until it finishes (or
        ``timeout`` seconds pass: :class:`~fedoversight.errors.RoundTimeoutError`)."""
        stream = self._operator.watch(round_id, timeout=timeout)
        try:
            while True:
                try:
                    progress = await self._call(anext(stream))
                except StopAsyncIteration:
                    return
                yield progress
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    # --- reading rounds ---------------------------------------------------------------------

    async def outcome(self, round_id: str) -> RoundOutcome:
        """A round as the operator API gives it (its tables as the coordinator combined them)."""
        return await self._call(self._operator.get_round(round_id))

    async def results(self, round_id: str) -> pd.DataFrame:
        """A round's typed tidy frame (:func:`coordinator.frames.round_frame`), with the round's
        metadata in ``attrs``. An open round gives what it has so far (``attrs["state"]``)."""
        return frames.round_frame(await self.outcome(round_id))

    async def results_many(self, round_ids: Iterable[str]) -> pd.DataFrame:
        """Several rounds' frames in one, in the order given (``round_id`` tells them apart;
        ``attrs`` holds each round's metadata under ``"rounds"``)."""
        ids = list(dict.fromkeys(round_ids))
        if not ids:
            raise InvalidRequestError("name at least one round")
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(round_id: str) -> pd.DataFrame:
            async with gate:
                return await self.results(round_id)

        parts = await asyncio.gather(*(one(r) for r in ids))
        combined = frames.concat(parts)
        combined.attrs = {"rounds": [dict(p.attrs) for p in parts]}
        return combined

    async def trend(
        self,
        metric: str,
        *,
        by: By | None = None,
        rounds: Iterable[str] | None = None,
        limit: int = DEFAULT_ROUNDS,
        latest: bool = True,
    ) -> pd.DataFrame:
        """``metric``'s rows from several finished rounds in one frame, oldest period first:
        the ``rounds`` given, or every finished round among the ``limit`` most recent that
        asked it (grouped by exactly the dimensions ``by``, in any order, when given). With
        ``latest``, where rounds asked the same period, grouping and filters again (a month
        run again as claims run out), only the newest round's rows are kept."""
        summaries = await self._call(self._operator.list_rounds(limit))
        wanted = None if rounds is None else set(rounds)
        grouping = None if by is None else set(_dimensions(by))
        chosen: dict[tuple[str, str], operator_pb2.RoundSummary] = {}
        for summary in summaries:  # newest first
            if wanted is not None and summary.round_id not in wanted:
                continue
            state = convert.round_state_from_pb(summary.state)
            if state not in FINISHED:
                continue
            for query in summary.queries:
                if query.metric != metric:
                    continue
                if grouping is not None and grouping != {
                    wire.dimension_from_pb(d) for d in query.group_by
                }:
                    continue
                asked = (
                    str(wire.period_from_pb(summary.period)),
                    query.SerializeToString(deterministic=True).hex(),
                )
                if latest:
                    chosen.setdefault(asked, summary)
                else:
                    chosen[(asked[0], summary.round_id)] = summary
        if wanted is not None and (unseen := wanted - {s.round_id for s in summaries}):
            raise InvalidRequestError(
                f"not among the {limit} most recent rounds: {', '.join(sorted(unseen))}"
                " (raise limit=)"
            )
        if not chosen:
            grouped = "" if grouping is None else f" grouped by ({', '.join(sorted(grouping))})"
            raise InvalidRequestError(
                f"no finished round among the {limit} most recent asked {metric}{grouped}"
            )
        order = sorted(
            {s.round_id: s for s in chosen.values()}.values(),
            key=lambda s: (
                wire.period_from_pb(s.period).first,
                wire.period_from_pb(s.period).last,
                s.created_at.ToNanoseconds(),
            ),
        )
        combined = await self.results_many(s.round_id for s in order)
        kept = combined[combined["metric"] == metric].reset_index(drop=True)
        kept.attrs = combined.attrs
        return kept

    async def rounds(
        self, limit: int = DEFAULT_ROUNDS, *, suite: str | None = None
    ) -> pd.DataFrame:
        """The ``limit`` most recent rounds (at most 1,000), newest first: one row each (see
        :data:`ROUND_COLUMNS`); only those a schedule ran for ``suite``, when given."""
        if not 0 < limit <= 1000:
            raise InvalidRequestError("limit is 1 to 1,000 rounds")
        summaries = await self._call(self._operator.list_rounds(limit, suite=suite))
        return rounds_frame(summaries)

    async def revisions(self, suite: str, month: str | None = None) -> pd.DataFrame:
        """A scheduled suite's revisions (docs/scheduling.md), by month then revision: each
        finished run of the suite that covered a month is a revision of it, 1 first, the last
        one ``latest`` (see :data:`REVISION_COLUMNS`); of ``month`` (``"YYYY-MM"``) only when
        given. A suite that never ran (or an unknown name) has none."""
        rows = await self._call(self._operator.list_revisions(suite, month))
        return revisions_frame(suite, rows)

    async def suite_results(
        self,
        suite: str,
        *,
        month: str | None = None,
        metric: str | None = None,
        latest: bool = True,
    ) -> pd.DataFrame:
        """A scheduled suite's figures month by month: for each month its runs covered (or
        ``month`` only), the rows of that month from its latest revision, or, with
        ``latest=False``, from every revision, to see how the month moved as claims ran out.

        The rows are those of the runs' frames whose ``month`` is that month (the suite's
        queries grouped by month; others are left out), of ``metric`` when given, followed by
        the columns of :data:`SUITE_COLUMNS` (``revision``, ``latest``, ...)."""
        listed = await self.revisions(suite, month)
        if latest:
            listed = listed[listed["latest"]]
        if listed.empty:
            raise InvalidRequestError(
                f"suite {suite!r} has no finished run"
                + (f" covering {month}" if month else "")
                + " (client.rounds(suite=...) lists its runs)"
            )
        fetched = await self.results_many(dict.fromkeys(listed["round_id"]))
        parts: list[pd.DataFrame] = []
        extra: dict[str, list[object]] = {c: [] for c in SUITE_COLUMNS}
        for row in listed.itertuples(index=False):
            if "month" not in fetched.columns:
                break
            rows = fetched[(fetched["round_id"] == row.round_id) & (fetched["month"] == row.month)]
            if metric is not None:
                rows = rows[rows["metric"] == metric]
            parts.append(rows)
            for column, value in (
                ("suite", suite),
                ("revision", row.revision),
                ("latest", row.latest),
                ("scheduled_for", row.scheduled_for),
            ):
                extra[column].extend([value] * len(rows))
        if not any(len(p) for p in parts):
            raise InvalidRequestError(
                f"suite {suite!r} has no rows by month"
                + (f" of {metric}" if metric else "")
                + ": its queries do not group by month (read its rounds with client.results)"
            )
        combined = frames.concat(parts).reset_index(drop=True)
        for column, dtype in SUITE_COLUMNS.items():
            values = pd.Series(extra[column], dtype=object)
            if dtype.startswith("datetime64"):
                combined[column] = pd.to_datetime(values, utc=True).astype(dtype)
            else:
                combined[column] = values.astype(dtype)
        combined.attrs = {"suite": suite, "rounds": fetched.attrs["rounds"]}
        return combined

    async def whoami(self) -> Identity:
        """Who the coordinator takes you for: your name, role (a viewer reads, an operator
        also runs rounds) and how you were recognised (certificate or token)."""
        return await self._call(self._operator.whoami())

    async def carriers(self) -> pd.DataFrame:
        """The registered carriers, whether their nodes are connected now, and what each node
        said of itself (see :data:`CARRIER_COLUMNS`)."""
        return carriers_frame(await self._call(self._operator.list_carriers()))

    async def metrics(self) -> pd.DataFrame:
        """The coordinator's metric catalogue, one row per metric version (see
        :data:`METRIC_COLUMNS`); ``attrs["catalogue_version"]``."""
        return metrics_frame(await self._call(self._operator.list_metrics()))

    # --- errors -----------------------------------------------------------------------------

    async def _call(self, call: Awaitable[T]) -> T:
        """Await an operator-API call, saying clearly when the coordinator itself is out of
        reach (gRPC's UNAVAILABLE otherwise reads as a carrier's)."""
        try:
            return await call
        except OversightError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.RpcError):
                raise self._clearer(cause, exc) from exc
            raise
        except grpc.RpcError as exc:  # none should get past OperatorClient; never leak one
            raise self._clearer(exc, from_rpc_error(exc)) from exc

    def _clearer(self, rpc: grpc.RpcError, error: OversightError) -> OversightError:
        """The error an analyst should read for a failed call: who refused and what to check."""
        code = rpc.code() if hasattr(rpc, "code") else None
        details = (rpc.details() if hasattr(rpc, "details") else "") or error.detail
        where = self.connection.address
        if code is grpc.StatusCode.UNAVAILABLE and _transport_failure(details):
            c = self.connection
            if c.ca_cert is None:
                hint = (
                    "check the address and that the coordinator runs (no CA certificate: plaintext)"
                )
            elif c.token_file is not None and c.cert is None:
                hint = (
                    "check the address (a token alone is accepted on the coordinator's operator"
                    " port only), that the coordinator runs, and the CA certificate"
                )
            else:
                hint = "check the address, that the coordinator runs, and the CA certificate"
            return CoordinatorUnavailableError(
                f"cannot reach the coordinator at {where}: {hint} ({details})"
            )
        if code is grpc.StatusCode.UNAUTHENTICATED:
            return AuthenticationError(
                f"the coordinator at {where} does not accept these credentials: {details}"
                " (check the certificate and key, or the token file, of your operator kit)"
            )
        if code is grpc.StatusCode.PERMISSION_DENIED:
            return ForbiddenError(f"the coordinator at {where} refused: {details}")
        return error


#: What gRPC says when the connection itself failed (rather than the coordinator refusing).
_TRANSPORT_FAILURES = (
    "failed to connect",
    "connect failed",
    "connection refused",
    "connection reset",
    "dns resolution",
    "name resolution",
    "socket closed",
    "handshake",
    "ssl",
    "tls",
    "empty address list",
)


def _transport_failure(details: str) -> bool:
    text = details.lower()
    return any(marker in text for marker in _TRANSPORT_FAILURES)


# --- queries ----------------------------------------------------------------------------------


def _dimensions(by: By) -> tuple[Dimension, ...]:
    names = [p for p in by.split(",")] if isinstance(by, str) else list(by)
    dims = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            dims.append(Dimension(name))
        except ValueError:
            known = ", ".join(d.value for d in Dimension)
            raise InvalidRequestError(f"unknown dimension {name!r} (dimensions: {known})") from None
    if len(set(dims)) != len(dims):
        raise InvalidRequestError("a dimension is named twice")
    return tuple(dims)


def build_query(
    metric: str,
    by: By = (),
    filters: Filters | None = None,
    parameters: Mapping[str, float] | None = None,
    version: int = 0,
) -> QuerySpec:
    """A validated query, with messages naming what is wrong and what would do."""
    if metric not in catalogue.metric_names():
        near = difflib.get_close_matches(metric, catalogue.metric_names(), n=3)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise UnknownMetricError(
            f"unknown metric {metric!r}{hint} (client.metrics() lists the catalogue)"
        )
    try:
        spec = catalogue.get_metric(metric, version or None)
    except UnknownMetricError:
        raise UnknownMetricError(f"{metric} has no version {version}") from None
    dims = _dimensions(by)
    wanted: dict[Dimension, list[str]] = {}
    for name, values in (filters or {}).items():
        (dim,) = _dimensions(name)
        wanted[dim] = [values] if isinstance(values, str) else [str(v) for v in values]
    refused = [str(d) for d in (*dims, *wanted) if d not in spec.dimensions]
    if refused:
        raise InvalidRequestError(
            f"{metric} does not accept {', '.join(refused)} (it accepts:"
            f" {', '.join(sorted(spec.dimensions))})"
        )
    if spec.one_of and not spec.one_of.intersection(dims):
        dims = (*dims, min(spec.one_of))
    return wire.make_query(spec.name, spec.version, dims, wanted or None, parameters)


# --- frames of the listings -------------------------------------------------------------------


def _timestamp(msg: Any, field: str) -> dt.datetime | None:
    if not msg.HasField(field):
        return None
    value: dt.datetime = getattr(msg, field).ToDatetime(tzinfo=dt.UTC)
    return value


def _month(value: str) -> dt.datetime:
    year, month = value.split("-")
    return dt.datetime(int(year), int(month), 1)


def _typed(rows: Sequence[Mapping[str, object]], columns: Mapping[str, str]) -> pd.DataFrame:
    data = {}
    for name, dtype in columns.items():
        values = [row.get(name) for row in rows]
        if dtype.startswith("datetime64"):
            times = pd.to_datetime(pd.Series(values, dtype=object), utc="UTC" in dtype)
            data[name] = times.astype(dtype)
        else:
            data[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data, columns=list(columns))


def rounds_frame(summaries: Sequence[operator_pb2.RoundSummary]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        period = wire.period_from_pb(s.period)
        rows.append(
            {
                "round_id": s.round_id,
                "created_at": _timestamp(s, "created_at"),
                "finished_at": _timestamp(s, "finished_at"),
                "period": str(period),
                "first_month": _month(str(period.first)),
                "last_month": _month(str(period.last)),
                "state": str(convert.round_state_from_pb(s.state)),
                "carriers_asked": s.carriers_asked,
                "carriers_answered": s.carriers_answered,
                "metrics": ",".join(dict.fromkeys(q.metric for q in s.queries)),
                "suite": s.suite or None,
                "scheduled_for": _timestamp(s, "scheduled_for"),
            }
        )
    return _typed(rows, ROUND_COLUMNS)


def revisions_frame(suite: str, revisions: Sequence[operator_pb2.Revision]) -> pd.DataFrame:
    rows = [
        {
            "suite": suite,
            "month": _month(r.month),
            "revision": r.revision,
            "latest": r.latest,
            "round_id": r.round_id,
            "scheduled_for": _timestamp(r, "scheduled_for"),
            "finished_at": _timestamp(r, "finished_at"),
            "state": str(convert.round_state_from_pb(r.state)),
        }
        for r in revisions
    ]
    return _typed(rows, REVISION_COLUMNS)


def carriers_frame(carriers: Sequence[operator_pb2.CarrierInfo]) -> pd.DataFrame:
    rows = [
        {
            "carrier_id": c.carrier_id,
            "display_name": c.display_name or None,
            "connected": c.connected,
            "catalogue_version": c.catalogue_version or None,
            "node_version": c.node_version or None,
            "last_seen": _timestamp(c, "last_seen"),
        }
        for c in carriers
    ]
    return _typed(rows, CARRIER_COLUMNS)


def metrics_frame(response: operator_pb2.ListMetricsResponse) -> pd.DataFrame:
    def names(values: Iterable[int]) -> str:
        return ",".join(str(wire.dimension_from_pb(v)) for v in values)

    rows = [
        {
            "metric": m.name,
            "metric_version": m.version,
            "title": m.title,
            "dimensions": names(m.dimensions),
            "group_by_one_of": names(m.group_by_one_of) or None,
            "statistics": ",".join(s.name for s in m.statistics),
            "figures": ",".join(m.figures) or None,
            "parameters": ",".join(p.name for p in m.parameters) or None,
            "definition": m.definition,
        }
        for m in response.metrics
    ]
    frame = _typed(rows, METRIC_COLUMNS)
    frame.attrs = {"catalogue_version": response.catalogue_version}
    return frame


# --- the synchronous twin ---------------------------------------------------------------------


class _LoopThread:
    """A private event loop running in a daemon thread: the synchronous client's async calls
    run there, whatever loop (if any) the caller's thread runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="fedoversight-client", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("the synchronous client cannot be called from its own loop")
        future: concurrent.futures.Future[T] | None = None
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            return future.result()
        except BaseException:
            # Interrupted (a notebook's stop button): the call stops too.
            if future is not None:
                future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:
            # Finalised from the loop's own thread: stop it; it cannot wait for itself.
            self.loop.stop()
            return
        with contextlib.suppress(RuntimeError):
            self.call(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Client:
    """The synchronous client, for notebooks and scripts: the same methods as
    :class:`AsyncClient`, each returning when its answer is in.

    It runs the async client on a private event loop in a thread of its own, so it works in
    Jupyter (whose kernel runs a loop in the caller's thread) as in a plain script. Use it as
    ``with Client.from_env("operator.env") as client:``, or call :meth:`close`.
    """

    def __init__(
        self,
        address: str,
        *,
        ca_cert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token_file: str | Path | None = None,
        signing_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> None:
        self._runner = _LoopThread()

        async def make() -> AsyncClient:
            # gRPC's async channel belongs to the loop it is made on: make it on ours.
            return AsyncClient(
                address,
                ca_cert=ca_cert,
                cert=cert,
                key=key,
                token_file=token_file,
                signing_key=signing_key,
                server_name=server_name,
            )

        try:
            self._async = self._runner.call(make())
        except BaseException:
            self._runner.stop()
            raise
        # A client dropped without close() still stops its thread when collected.
        self._finalizer = weakref.finalize(self, self._runner.stop)
        self.connection = self._async.connection

    @classmethod
    def from_env(cls, env_file: str | Path | None = None, **overrides: str | Path | None) -> Client:
        """A client from an operator kit (see :meth:`AsyncClient.from_env`)."""
        c = connection_from_env(env_file, **overrides)
        return cls(
            c.address,
            ca_cert=c.ca_cert,
            cert=c.cert,
            key=c.key,
            token_file=c.token_file,
            signing_key=c.signing_key,
            server_name=c.server_name,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.connection.address!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the client's thread (again: nothing)."""
        if self._runner.loop.is_closed():
            return
        try:
            self._runner.call(self._async.close())
        finally:
            self._finalizer()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._runner.loop.is_closed():
            coro.close()
            raise ConfigError("this client is closed")
        return self._runner.call(coro)

    @overload
    def run(
        self,
        metric: str,
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        version: int = 0,
        parameters: Mapping[str, float] | None = None,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[True] = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame: ...

    @overload
    def run(
        self,
        metric: str,
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        version: int = 0,
        parameters: Mapping[str, float] | None = None,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[False],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> str: ...

    def run(
        self,
        metric: str,
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        version: int = 0,
        parameters: Mapping[str, float] | None = None,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame | str:
        """Run one metric in a new round (see :meth:`AsyncClient.run`). ``on_progress`` is
        called from the client's thread."""
        query = build_query(metric, by, filters, parameters, version)
        return self._call(
            self._async._ask(
                [query],
                period,
                carriers,
                quorum,
                deadline,
                purpose=purpose,
                justification=justification,
                wait=wait,
                on_progress=on_progress,
            )
        )

    @overload
    def run_many(
        self,
        metrics: Sequence[str],
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[True] = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame: ...

    @overload
    def run_many(
        self,
        metrics: Sequence[str],
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: Literal[False],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> str: ...

    def run_many(
        self,
        metrics: Sequence[str],
        period: str | Period,
        by: By = (),
        filters: Filters | None = None,
        carriers: Sequence[str] = (),
        *,
        quorum: int = 0,
        deadline: int = DEFAULT_DEADLINE,
        purpose: str = "",
        justification: str = "",
        wait: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> pd.DataFrame | str:
        """Several metrics in one round (see :meth:`AsyncClient.run_many`)."""
        if wait:
            return self._call(
                self._async.run_many(
                    metrics,
                    period,
                    by,
                    filters,
                    carriers,
                    quorum=quorum,
                    deadline=deadline,
                    purpose=purpose,
                    justification=justification,
                    on_progress=on_progress,
                )
            )
        return self._call(
            self._async.run_many(
                metrics,
                period,
                by,
                filters,
                carriers,
                quorum=quorum,
                deadline=deadline,
                purpose=purpose,
                justification=justification,
                wait=False,
            )
        )

    def watch(self, round_id: str, timeout: float = DEFAULT_DEADLINE + 60) -> Iterator[Progress]:
        """The round's progress until it finishes (see :meth:`AsyncClient.watch`)."""
        stream = self._async.watch(round_id, timeout=timeout)

        async def step() -> Progress | None:
            try:
                return await anext(stream)
            except StopAsyncIteration:
                return None

        async def finish() -> None:
            await stream.aclose()  # type: ignore[attr-defined]

        try:
            while (progress := self._call(step())) is not None:
                yield progress
        finally:
            # An abandoned generator may be finalised anywhere; only a caller's thread waits.
            if not self._runner.loop.is_closed() and (
                threading.current_thread() is not self._runner.thread
            ):
                self._runner.call(finish())

    def outcome(self, round_id: str) -> RoundOutcome:
        """A round as the operator API gives it (see :meth:`AsyncClient.outcome`)."""
        return self._call(self._async.outcome(round_id))

    def results(self, round_id: str) -> pd.DataFrame:
        """A round's typed tidy frame (see :meth:`AsyncClient.results`)."""
        return self._call(self._async.results(round_id))

    def results_many(self, round_ids: Iterable[str]) -> pd.DataFrame:
        """Several rounds' frames in one (see :meth:`AsyncClient.results_many`)."""
        return self._call(self._async.results_many(list(round_ids)))

    def trend(
        self,
        metric: str,
        *,
        by: By | None = None,
        rounds: Iterable[str] | None = None,
        limit: int = DEFAULT_ROUNDS,
        latest: bool = True,
    ) -> pd.DataFrame:
        """A metric's rows from several finished rounds (see :meth:`AsyncClient.trend`)."""
        return self._call(
            self._async.trend(
                metric,
                by=by,
                rounds=None if rounds is None else list(rounds),
                limit=limit,
                latest=latest,
            )
        )

    def rounds(self, limit: int = DEFAULT_ROUNDS, *, suite: str | None = None) -> pd.DataFrame:
        """The most recent rounds (see :meth:`AsyncClient.rounds`)."""
        return self._call(self._async.rounds(limit, suite=suite))

    def revisions(self, suite: str, month: str | None = None) -> pd.DataFrame:
        """A scheduled suite's revisions of each month (see :meth:`AsyncClient.revisions`)."""
        return self._call(self._async.revisions(suite, month))

    def suite_results(
        self,
        suite: str,
        *,
        month: str | None = None,
        metric: str | None = None,
        latest: bool = True,
    ) -> pd.DataFrame:
        """A scheduled suite's figures month by month, by revision (see
        :meth:`AsyncClient.suite_results`)."""
        return self._call(
            self._async.suite_results(suite, month=month, metric=metric, latest=latest)
        )

    def whoami(self) -> Identity:
        """Who the coordinator takes you for (see :meth:`AsyncClient.whoami`)."""
        return self._call(self._async.whoami())

    def carriers(self) -> pd.DataFrame:
        """The registered carriers (see :meth:`AsyncClient.carriers`)."""
        return self._call(self._async.carriers())

    def metrics(self) -> pd.DataFrame:
        """The metric catalogue (see :meth:`AsyncClient.metrics`)."""
        return self._call(self._async.metrics())


__all__ = [
    "CARRIER_COLUMNS",
    "METRIC_COLUMNS",
    "REVISION_COLUMNS",
    "ROUND_COLUMNS",
    "SUITE_COLUMNS",
    "AsyncClient",
    "Client",
    "Connection",
    "ForbiddenError",
    "Identity",
    "Progress",
    "RoundOutcome",
    "build_query",
    "connection_from_env",
]
