"""Formal differential privacy, the strict option: zCDP through OpenDP's Gaussian mechanism,
under a persistent per-month budget.

Every released statistic gets discrete Gaussian noise (``make_gaussian`` on integers) whose
scale follows from its share of the request's ρ and its L2 sensitivity: how much one member
can change the whole table. A member is in at most one cell of a table of people (cells are
people attributed once for the period) and in at most as many cells as the period has months
otherwise (each member month is in one cell); in each cell the engine clamps the member's
contribution to the catalogue's per-member bound times the member months the cell can hold
(:meth:`fedoversight.metricspec.MetricSpec.contribution_clamp`). So:

- a count of members: √(cells per member);
- a count, quantity or dollar total: its clamp × √(cells per member).

Tables grouped by a dimension of claim rows (service category, drug class) would let one
member reach an unbounded number of cells: they are refused under differential privacy.
Totals no member contributes to (rebates) are not personal data and keep cell-key
perturbation. Histogram bins: counts are released with noise (a person is in one bin), bin
dollars are withheld.

The budget is charged to every calendar month the request covers, kept in the node's SQLite
state, and a request that would overspend any month is refused. Whether a cell is shown at all
is decided on its *noisy* member count (post-processing of a DP release), so the cells an
answer lists are themselves a DP release; a cell of fewer members than the floor can still
appear with a small probability (its noise reaching the floor), the δ of the release, which
``docs/disclosure.md`` quantifies.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import opendp.prelude as dp

from fedoversight.catalogue import MetricSpec, StatisticSpec, StatKind
from fedoversight.dimensions import Dimension
from fedoversight.errors import OversightError, PolicyRefusedError
from fedoversight.v1 import types_pb2

dp.enable_features("contrib")

#: Dimensions of claim rows: one member can be in any number of their cells.
ROW_DIMENSIONS = frozenset(
    {Dimension.SERVICE_CATEGORY, Dimension.SERVICE_CATEGORY_2, Dimension.DRUG_CLASS}
)


class BudgetExhaustedError(OversightError):
    public = "the carrier's privacy budget for this period is spent"
    code = types_pb2.ERROR_CODE_BUDGET_EXHAUSTED


def check_query(group_by: tuple[Dimension, ...]) -> None:
    """Refuse a grouping under which one member's reach is unbounded."""
    if ROW_DIMENSIONS.intersection(group_by):
        raise PolicyRefusedError(
            "not answered under differential privacy: grouped by a dimension of claim rows"
        )


def cells_per_member(spec: MetricSpec, months: int) -> int:
    return 1 if spec.per_person else months


def sensitivity(
    spec: MetricSpec, stat: StatisticSpec, group_by: tuple[Dimension, ...], months: int
) -> float | None:
    """The L2 sensitivity of ``stat`` over a whole table (None: not released under DP)."""
    reach = math.sqrt(cells_per_member(spec, months))
    if stat.kind is StatKind.MEMBERS:
        return reach
    clamp = spec.contribution_clamp(stat, group_by, months)
    return None if clamp is None else clamp * reach


@dataclass(frozen=True)
class GaussianNoise:
    """Discrete Gaussian noise for one statistic, built by OpenDP."""

    #: Reported with every table released under differential privacy.
    NAME = "discrete Gaussian (OpenDP make_gaussian), zCDP"

    scale: float
    rho: float
    sensitivity: int

    @classmethod
    def for_rho(cls, rho: float, sensitivity: float) -> GaussianNoise:
        bound = max(1, math.ceil(sensitivity))
        scale = bound / math.sqrt(2 * rho)
        measurement = cls._measurement(scale)
        used = measurement.map(d_in=bound)  # type: ignore[no-untyped-call]
        return cls(scale=scale, rho=float(used), sensitivity=bound)

    @staticmethod
    def _measurement(scale: float) -> dp.Measurement:
        return dp.m.make_gaussian(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale)

    def release(self, value: int) -> int:
        return int(self._measurement(self.scale)(int(value)))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_budget (
  month TEXT PRIMARY KEY,
  spent REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS privacy_spend (
  request_id TEXT NOT NULL,
  month TEXT NOT NULL,
  rho REAL NOT NULL,
  spent_at TEXT NOT NULL
);
"""


class PrivacyBudget:
    """ρ spent per calendar month, durable in the node's state."""

    def __init__(self, path: Path | str, limit_per_month: float) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.limit = limit_per_month
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def spent(self, month: str) -> float:
        with self._lock:
            row = self._db.execute(
                "SELECT spent FROM privacy_budget WHERE month = ?", (month,)
            ).fetchone()
        return float(row[0]) if row else 0.0

    def charge(self, months: list[str], rho: float, request_id: str) -> dict[str, float]:
        """Charge ``rho`` to every one of ``months``, all or nothing; return what is spent."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                spent = {}
                for month in months:
                    row = self._db.execute(
                        "SELECT spent FROM privacy_budget WHERE month = ?", (month,)
                    ).fetchone()
                    spent[month] = (float(row[0]) if row else 0.0) + rho
                    if spent[month] > self.limit + 1e-12:
                        raise BudgetExhaustedError(f"month {month} would exceed its budget")
                for month, total in spent.items():
                    self._db.execute(
                        "INSERT INTO privacy_budget (month, spent) VALUES (?, ?)"
                        " ON CONFLICT (month) DO UPDATE SET spent = excluded.spent",
                        (month, total),
                    )
                    self._db.execute(
                        "INSERT INTO privacy_spend VALUES (?, ?, ?, ?)",
                        (request_id, month, rho, now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return spent

    def close(self) -> None:
        with self._lock:
            self._db.close()
