"""Domain types both sides share. Protobuf stays at the edge (:mod:`fedoversight.wire`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from fedoversight.dimensions import Dimension
from fedoversight.histogram import Histogram
from fedoversight.periods import Period


class Status(StrEnum):
    """How a value was released: exactly (``released``: where the carrier's policy turns
    perturbation off, and true zeros), with noise (``perturbed``), or not at all."""

    RELEASED = "released"
    PERTURBED = "perturbed"
    WITHHELD = "withheld"

    @property
    def withheld(self) -> bool:
        return self is Status.WITHHELD


class Withheld(StrEnum):
    """Why a carrier withheld a value."""

    #: It rests on fewer members than the floor (1 to 10 at the program floor).
    SMALL = "small"
    #: It is part of another statistic, and the rest (whole less part) rests on too few.
    REST = "rest"
    #: A cell of a sensitive category below its stricter floor (zero included, so that its
    #: presence says nothing).
    SENSITIVE = "sensitive"
    #: Not released under the carrier's differential privacy (no per-member bound).
    PRIVACY = "privacy"


@dataclass(frozen=True)
class Missing:
    """What a value leaves out: for a carrier's withheld value, the value itself; for a
    program-wide sum, the withheld values of the carriers it could not add."""

    #: Carriers whose value is missing.
    carriers: int
    #: At most this much is missing, in the statistic's own unit (None: no bound is known,
    #: e.g. dollars).
    at_most: int | None = None
    #: The missing values rest on at most this many members in all (None for totals no
    #: member contributes to).
    members_at_most: int | None = None
    #: Why, for a carrier's own withheld value (None in a program sum).
    reason: Withheld | None = None


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
class Purpose:
    """Why a round is asked (inside the signed request; docs/purpose.md)."""

    #: A code of the coordinator's closed list of purposes.
    code: str
    #: The version of that list.
    list_version: str
    #: The requesting office's reason, in its own words.
    justification: str
    #: The requesting office.
    office: str

    def describe(self) -> dict[str, str]:
        return {
            "code": self.code,
            "list_version": self.list_version,
            "justification": self.justification,
            "office": self.office,
        }


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
    #: The carriers it is addressed to (sorted): a node refuses a request not naming it.
    carriers: tuple[str, ...] = ()
    #: When the round needs the answer (its deadline; None: ``expires_at``). A node stops
    #: evaluating past it and refuses.
    answer_by: dt.datetime | None = None
    #: Why it is asked (None: a request of a coordinator that predates purposes).
    purpose: Purpose | None = None

    @property
    def deadline(self) -> dt.datetime:
        """When the answer is due: ``answer_by``, never after ``expires_at``."""
        return min(self.answer_by, self.expires_at) if self.answer_by else self.expires_at


@dataclass(frozen=True)
class StatValue:
    name: str
    status: Status
    value: StatValueType | None
    #: What the value leaves out: set for a withheld value, and for a program-wide sum that
    #: could not add some carrier's (see :class:`Missing`).
    missing: Missing | None = None

    @property
    def complete(self) -> bool:
        return self.missing is None


CellKey = tuple[tuple[Dimension, str], ...]


@dataclass(frozen=True)
class CellResult:
    key: CellKey
    stats: tuple[StatValue, ...]

    @property
    def status(self) -> Status:
        return worst_status(s.status for s in self.stats)

    def stat(self, name: str) -> StatValue:
        for s in self.stats:
            if s.name == name:
                return s
        raise KeyError(name)


def worst_status(statuses: Iterable[Status]) -> Status:
    """A cell's status from its statistics': withheld, else perturbed, else released."""
    seen = set(statuses)
    for worst in (Status.WITHHELD, Status.PERTURBED):
        if worst in seen:
            return worst
    return Status.RELEASED


class Method(StrEnum):
    """How a carrier's node protects what it releases."""

    #: Consistent perturbation (the default): counts from a perturbation table, magnitudes in
    #: proportion to their largest contribution, noise drawn from each value's contents.
    CELL_KEY = "cell-key perturbation"
    #: Formal differential privacy (zCDP, OpenDP's Gaussian mechanism) under a budget.
    DIFFERENTIAL_PRIVACY = "differential privacy (zCDP)"
    #: Exact values (minimum sizes only): for validation against known data, not for claims.
    NONE = "none"


@dataclass(frozen=True)
class NoiseScale:
    """Differential privacy: one statistic's noise (standard deviation) and privacy loss."""

    statistic: str
    scale: float
    rho: float


@dataclass(frozen=True)
class Perturbation:
    """The published parameters of cell-key perturbation (never the node's secret)."""

    #: Counts: noise between −count_max_noise and +count_max_noise, mean 0, this variance.
    count_max_noise: int
    count_variance: float
    #: Magnitudes: noise between p% and p%·(1 + spread) of the largest contribution.
    p_percent: float
    spread: float
    #: Which of the node's secrets drew the noise (a new one means new noise for every value).
    key_version: int


@dataclass(frozen=True)
class DisclosureSummary:
    min_cell_size: int
    #: Cells by what was done to their statistics: all released (exact or perturbed), all
    #: withheld, or some withheld; and cells with a perturbed statistic.
    cells_released: int = 0
    cells_withheld: int = 0
    cells_partly_withheld: int = 0
    cells_perturbed: int = 0
    policy_digest: str = ""
    method: Method = Method.CELL_KEY
    #: Cell-key perturbation's parameters (None under another method).
    perturbation: Perturbation | None = None
    #: Statistics withheld, by reason.
    withheld: tuple[tuple[Withheld, int], ...] = ()
    #: Differential privacy, when applied: the mechanism, each perturbed statistic's noise
    #: and privacy loss, the ρ (zCDP) charged to every month of the period, and the least
    #: budget any of those months has left afterwards.
    noise_mechanism: str = ""
    noise_scales: tuple[NoiseScale, ...] = ()
    rho_spent: float = 0.0
    rho_remaining: float = 0.0


@dataclass(frozen=True)
class QueryTable:
    metric: str
    version: int
    group_by: tuple[Dimension, ...]
    cells: tuple[CellResult, ...]
    disclosure: DisclosureSummary


@dataclass(frozen=True)
class AuditAnchor:
    """A point of a node's hash-chained audit log: an entry's sequence number and its hash
    (64 hex digits); ``seq`` 0 with the genesis hash for an empty log."""

    seq: int
    hash: str


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
    #: The node's audit log head when it signed the result (None from nodes before anchors).
    audit_anchor: AuditAnchor | None = None
