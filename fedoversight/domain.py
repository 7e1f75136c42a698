"""Domain types both sides share. Protobuf stays at the edge (:mod:`fedoversight.wire`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from fedoversight.dimensions import Dimension
from fedoversight.histogram import Histogram
from fedoversight.periods import Period


class Status(StrEnum):
    RELEASED = "released"
    SUPPRESSED_PRIMARY = "suppressed-primary"
    SUPPRESSED_COMPLEMENTARY = "suppressed-complementary"
    PERTURBED = "perturbed"

    @property
    def suppressed(self) -> bool:
        return self in (Status.SUPPRESSED_PRIMARY, Status.SUPPRESSED_COMPLEMENTARY)


StatValueType = int | float | Histogram


@dataclass(frozen=True)
class QuerySpec:
    """One metric computation, validated against the catalogue."""

    metric: str
    version: int
    group_by: tuple[Dimension, ...] = ()
    filters: tuple[tuple[Dimension, tuple[str, ...]], ...] = ()
    parameters: tuple[tuple[str, float], ...] = ()

    @property
    def filter_map(self) -> dict[Dimension, tuple[str, ...]]:
        return dict(self.filters)

    @property
    def parameter_map(self) -> dict[str, float]:
        return dict(self.parameters)


@dataclass(frozen=True)
class RequestSpec:
    request_id: str
    round_id: str
    catalogue_version: str
    period: Period
    queries: tuple[QuerySpec, ...]
    issued_at: dt.datetime
    expires_at: dt.datetime
    nonce: bytes


@dataclass(frozen=True)
class StatValue:
    name: str
    status: Status
    value: StatValueType | None


CellKey = tuple[tuple[Dimension, str], ...]


@dataclass(frozen=True)
class CellResult:
    key: CellKey
    stats: tuple[StatValue, ...]

    @property
    def status(self) -> Status:
        statuses = {s.status for s in self.stats}
        for worst in (Status.SUPPRESSED_PRIMARY, Status.SUPPRESSED_COMPLEMENTARY, Status.PERTURBED):
            if worst in statuses:
                return worst
        return Status.RELEASED

    def stat(self, name: str) -> StatValue:
        for s in self.stats:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True)
class NoiseScale:
    statistic: str
    scale: float
    epsilon: float


@dataclass(frozen=True)
class DisclosureSummary:
    min_cell_size: int
    cells_released: int = 0
    cells_suppressed_primary: int = 0
    cells_suppressed_complementary: int = 0
    cells_perturbed: int = 0
    policy_digest: str = ""
    #: Differential privacy, when applied: the mechanism, each perturbed statistic's noise
    #: scale and privacy loss, the ε charged to every month of the period, and the least
    #: budget any of those months has left afterwards.
    noise_mechanism: str = ""
    noise_scales: tuple[NoiseScale, ...] = ()
    epsilon_spent: float = 0.0
    epsilon_remaining: float = 0.0


@dataclass(frozen=True)
class QueryTable:
    metric: str
    version: int
    group_by: tuple[Dimension, ...]
    cells: tuple[CellResult, ...]
    disclosure: DisclosureSummary


@dataclass(frozen=True)
class ResultSpec:
    request_id: str
    round_id: str
    carrier_id: str
    catalogue_version: str
    tables: tuple[QueryTable, ...]
    request_digest: bytes
    data_snapshot: str
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
