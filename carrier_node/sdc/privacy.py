"""Optional differential privacy: OpenDP noise on counts and sums, and a persistent budget.

Each statistic gets discrete Laplace noise (OpenDP's ``make_laplace`` on integers) with a scale
set by its per-member contribution bound: a member changes a member count by 1, a member-month
count by the months in the period, an event count by the policy's event bound, and a sum in
cents by the policy's dollar bound (sums are of per-member totals clamped to that bound at the
engine; without a clamp the node refuses DP for the metric). The budget is charged to every
calendar month the request covers, kept in the node's SQLite state, and a request that would
overspend any month is refused.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import opendp.prelude as dp

from fedoversight.errors import OversightError
from fedoversight.periods import Period
from fedoversight.v1 import types_pb2

dp.enable_features("contrib")


class BudgetExhaustedError(OversightError):
    public = "the carrier's privacy budget for this period is spent"
    code = types_pb2.ERROR_CODE_BUDGET_EXHAUSTED


@dataclass(frozen=True)
class NoiseMechanism:
    """Discrete Laplace noise for one statistic, built by OpenDP."""

    #: Reported with every perturbed table.
    NAME = "discrete Laplace (OpenDP make_laplace)"

    scale: float
    epsilon: float

    @classmethod
    def for_epsilon(cls, epsilon: float, sensitivity: int) -> NoiseMechanism:
        scale = sensitivity / epsilon
        measurement = dp.m.make_laplace(
            dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale
        )
        epsilon_used = measurement.map(d_in=sensitivity)  # type: ignore[no-untyped-call]
        return cls(scale=scale, epsilon=float(epsilon_used))

    def release(self, value: int) -> int:
        measurement = dp.m.make_laplace(
            dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=self.scale
        )
        return int(measurement(int(value)))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_budget (
  month TEXT PRIMARY KEY,
  spent REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS privacy_spend (
  request_id TEXT NOT NULL,
  month TEXT NOT NULL,
  epsilon REAL NOT NULL,
  spent_at TEXT NOT NULL
);
"""


class PrivacyBudget:
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

    def charge(self, period: Period, epsilon: float, request_id: str) -> dict[str, float]:
        """Charge ``epsilon`` to every month of ``period``, all or nothing; return what is spent."""
        months = [str(m) for m in period.months()]
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                spent = {}
                for month in months:
                    row = self._db.execute(
                        "SELECT spent FROM privacy_budget WHERE month = ?", (month,)
                    ).fetchone()
                    spent[month] = (float(row[0]) if row else 0.0) + epsilon
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
                        (request_id, month, epsilon, now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return spent

    def close(self) -> None:
        with self._lock:
            self._db.close()
