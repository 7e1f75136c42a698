"""The node's disclosure pipeline: raw tables of one request in, releasable tables out.

In order, for every table of the request:

1. **Primary suppression** — a cell resting on 1 to (floor − 1) members in any member-count
   statistic (numerators, denominators, excluded counts alike; zero is allowed) is hidden
   whole. The floor is the policy's, stricter for cells keyed by a sensitive group.
2. **Dominance** — a dollar total where one member's contribution could be estimated too
   closely (the p% rule, from the largest two member contributions the engine reports) is
   hidden.
3. **Differencing** — a cell whose population is nested in (or contains) one released before,
   or earlier in this request, and differs from it by 1 to (floor − 1) members is hidden. So
   is every line of cells whose sum over member dimensions (which anyone can add up) would
   do the same; those sums are recorded with the cells.
4. **Complementary suppression** — more cells are hidden until no hidden cell can be derived
   from its lines' margins, proven by the LP interval audit.
5. **Differential privacy** (when the policy asks) — released counts get OpenDP noise and the
   request's ε is charged to the persistent budget (refused when spent); dollar totals are
   withheld under DP.

The released cells are then recorded in the ledger. Each decision carries its reason so the
node's audit log can say why a cell was withheld.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from carrier_node.engine import RawCell, RawTable
from carrier_node.policy import Policy
from carrier_node.sdc.complementary import complementary
from carrier_node.sdc.ledger import MEMBER_DIMENSIONS, Ledger, Release, cell_box, family_of
from carrier_node.sdc.privacy import NoiseMechanism, PrivacyBudget
from carrier_node.sdc.tables import Table
from fedoversight.catalogue import MetricSpec, StatKind, get_metric
from fedoversight.dimensions import Dimension
from fedoversight.domain import (
    CellKey,
    CellResult,
    DisclosureSummary,
    NoiseScale,
    QueryTable,
    RequestSpec,
    Status,
    StatValue,
)

log = logging.getLogger(__name__)

SMALL_CELL = "small-cell"
DOMINANCE = "dominance"
DIFFERENCING = "differencing"
COMPLEMENTARY = "complementary"
PERTURBED = "perturbed"


@dataclass(frozen=True)
class _Charge:
    """What a request charged to the privacy budget (nothing without DP)."""

    epsilon: float = 0.0
    remaining: float = 0.0


@dataclass
class TableDecision:
    """Why each withheld cell of one table was withheld (by cell index), and which statistics
    of otherwise released cells were (dollar totals under the dominance rule)."""

    metric: str
    reasons: dict[int, str] = field(default_factory=dict)
    withheld: dict[int, dict[str, str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Cells by reason: a whole cell by its own, a partly withheld one by its worst."""
        out: dict[str, int] = {}
        for reason in self.reasons.values():
            out[reason] = out.get(reason, 0) + 1
        for stats in self.withheld.values():
            reason = DOMINANCE if DOMINANCE in stats.values() else COMPLEMENTARY
            out[reason] = out.get(reason, 0) + 1
        return out


def dominated(total: int, largest: int, second: int, p_percent: float) -> bool:
    """The p% rule: the runner-up could estimate the largest contribution within p%."""
    if total <= 0 or largest <= 0:
        return False
    return total - largest - second < p_percent / 100.0 * largest


def _values(cell: RawCell) -> dict[str, object]:
    return dict(cell.values)


def _audit_statistic(spec: MetricSpec) -> str | None:
    """The additive count the complementary audit protects."""
    for s in spec.statistics:
        if s.kind is StatKind.COUNT:
            return s.name
    for s in spec.statistics:
        if s.kind is StatKind.MEMBERS:
            return s.name
    return None


class Protector:
    def __init__(
        self,
        policy: Policy,
        ledger: Ledger | None = None,
        budget: PrivacyBudget | None = None,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.budget = budget

    def protect(
        self, request: RequestSpec, raws: Sequence[RawTable]
    ) -> tuple[list[QueryTable], list[TableDecision]]:
        dp_policy = self.policy.differential_privacy
        charge = _Charge()
        if dp_policy.enabled:
            if self.budget is None:
                raise RuntimeError("differential privacy needs a budget store")
            epsilon = dp_policy.epsilon_per_query * len(raws)
            spent = self.budget.charge(request.period, epsilon, request.request_id)
            charge = _Charge(epsilon, self.budget.limit - max(spent.values(), default=0.0))
        pending: list[Release] = []
        tables: list[QueryTable] = []
        decisions: list[TableDecision] = []
        for raw in raws:
            table, decision, releases = self._protect_table(request, raw, pending, charge)
            pending.extend(releases)
            tables.append(table)
            decisions.append(decision)
        if self.ledger is not None and pending:
            self.ledger.record(pending, request.request_id)
        return tables, decisions

    def _protect_table(
        self, request: RequestSpec, raw: RawTable, pending: list[Release], charge: _Charge
    ) -> tuple[QueryTable, TableDecision, list[Release]]:
        spec = get_metric(raw.query.metric, raw.query.version)
        decision = TableDecision(metric=spec.name)
        cells = raw.cells
        member_stats = [s.name for s in spec.statistics if s.kind is StatKind.MEMBERS]
        guarded = [*member_stats, *(["member_months"] if any(
            s.name == "member_months" for s in spec.statistics) else [])]
        filters = dict(raw.query.filters)
        thresholds = [
            self.policy.threshold_for({d.value: v for d, v in c.key}) for c in cells
        ]
        # 1. primary
        for i, cell in enumerate(cells):
            values = _values(cell)
            if any(0 < int(values[n]) < thresholds[i] for n in member_stats):  # type: ignore[call-overload]
                decision.reasons[i] = SMALL_CELL
        # 2. dominance: the dominated dollar total is withheld (the cell's counts stand)
        dominance = self.policy.dominance
        if dominance.enabled:
            for i, cell in enumerate(cells):
                if i in decision.reasons:
                    continue
                for name, (total, largest, second) in cell.contributions:
                    if dominated(total, largest, second, dominance.p_percent):
                        decision.withheld.setdefault(i, {})[name] = DOMINANCE
        # 3. differencing against the ledger and this request's earlier tables
        releases: list[Release] = []
        margins = _margin_groups(raw.query.group_by, cells)
        if self.policy.differencing_guard:
            for i, cell in enumerate(cells):
                if i in decision.reasons:
                    continue
                values = _values(cell)
                for name in guarded:
                    family = family_of(spec.name, name)
                    box = cell_box(
                        request.period, cell.key, filters,
                        MEMBER_DIMENSIONS if family == "enrolled" else None,
                    )
                    release = Release(family, name, box, int(values[name]))  # type: ignore[call-overload]
                    conflict = self.ledger.conflict(release, thresholds[i], [*pending, *releases]) \
                        if self.ledger is not None else _pending_conflict(
                            release, thresholds[i], [*pending, *releases])
                    if conflict is not None:
                        decision.reasons[i] = DIFFERENCING
                        break
            # A table's sums over its member dimensions are released as surely as its cells
            # (add up a released line), so each is guarded as a population of its own: else a
            # different grouping of an all-but-a-few population would give the few away.
            for group, rest in margins:
                if any(i in decision.reasons for i in group):
                    continue  # not derivable exactly from what is released
                threshold = max(thresholds[i] for i in group)
                for release in self._margin_releases(request, spec.name, guarded, filters,
                                                     cells, group, rest):
                    conflict = self.ledger.conflict(release, threshold, [*pending, *releases]) \
                        if self.ledger is not None else _pending_conflict(
                            release, threshold, [*pending, *releases])
                    if conflict is not None:
                        for i in group:
                            decision.reasons[i] = DIFFERENCING
                        break
        # 4. complementary, audited
        audit_stat = _audit_statistic(spec)
        primary = set(decision.reasons)
        if primary and audit_stat is not None and cells and cells[0].key:
            table = Table(
                keys=tuple(c.key for c in cells),
                values=tuple(max(0, int(_values(c)[audit_stat])) for c in cells),  # type: ignore[call-overload]
            )
            floor = max(thresholds) if thresholds else self.policy.min_cell_size
            for i in complementary(table, primary, floor):
                decision.reasons[i] = COMPLEMENTARY
        # 4b. the same for each dollar total withheld for dominance: what an analyst can
        # derive must leave it at least p% of itself to either side
        for i in list(decision.withheld):
            if i in decision.reasons:
                del decision.withheld[i]
        dollar_stats = sorted({n for d in decision.withheld.values() for n in d})
        if dollar_stats and cells and cells[0].key:
            for name in dollar_stats:
                hidden = set(decision.reasons) | {
                    i for i, d in decision.withheld.items() if name in d}
                column = tuple(max(0, c.value(name)) for c in cells)
                required = {i: dominance.p_percent / 100 * column[i]
                            for i, d in decision.withheld.items() if d.get(name) == DOMINANCE}
                for i in complementary(Table(tuple(c.key for c in cells), column), hidden,
                                       1, required):
                    decision.withheld.setdefault(i, {})[name] = COMPLEMENTARY
        # A histogram of the same dollars (its bins' cents) goes with a withheld total.
        histograms = [s.name for s in spec.statistics if s.kind is StatKind.HISTOGRAM]
        for withheld_stats in decision.withheld.values():
            cause = DOMINANCE if DOMINANCE in withheld_stats.values() else COMPLEMENTARY
            for name in histograms:
                withheld_stats[name] = cause
        # 5. build released cells (with DP noise when asked) and their ledger entries
        out: list[CellResult] = []
        dp_policy = self.policy.differential_privacy
        mechanisms = self._mechanisms(request, spec, raw) if dp_policy.enabled else {}
        for i, cell in enumerate(cells):
            reason = decision.reasons.get(i)
            if reason is not None:
                status = Status.SUPPRESSED_PRIMARY if reason in (
                    SMALL_CELL, DOMINANCE, DIFFERENCING) else Status.SUPPRESSED_COMPLEMENTARY
                out.append(CellResult(cell.key, tuple(
                    StatValue(n, status, None) for n, _ in cell.values)))
                continue
            stats = []
            withheld = decision.withheld.get(i, {})
            for name, value in cell.values:
                if name in withheld:
                    stats.append(StatValue(name, Status.SUPPRESSED_PRIMARY if withheld[name] in (
                        SMALL_CELL, DOMINANCE, DIFFERENCING) else Status.SUPPRESSED_COMPLEMENTARY,
                        None))
                elif dp_policy.enabled:
                    kind = spec.statistic(name).kind
                    if kind in (StatKind.CENTS, StatKind.HISTOGRAM):
                        stats.append(StatValue(name, Status.SUPPRESSED_PRIMARY, None))
                    else:
                        noisy = max(0, mechanisms[name].release(cell.value(name)))
                        stats.append(StatValue(name, Status.PERTURBED, noisy))
                else:
                    stats.append(StatValue(name, Status.RELEASED, value))
            out.append(CellResult(cell.key, tuple(stats)))
            if not dp_policy.enabled:
                for name in guarded:
                    family = family_of(spec.name, name)
                    box = cell_box(request.period, cell.key, filters,
                                   MEMBER_DIMENSIONS if family == "enrolled" else None)
                    releases.append(Release(family, name, box, cell.value(name)))
        if not dp_policy.enabled:
            for group, rest in margins:
                if not any(i in decision.reasons for i in group):
                    releases.extend(self._margin_releases(
                        request, spec.name, guarded, filters, cells, group, rest))
        counts = decision.counts()
        summary = DisclosureSummary(
            min_cell_size=self.policy.min_cell_size,
            cells_released=len(cells) - len(decision.reasons) - len(decision.withheld),
            cells_suppressed_primary=sum(
                counts.get(r, 0) for r in (SMALL_CELL, DOMINANCE, DIFFERENCING)),
            cells_suppressed_complementary=counts.get(COMPLEMENTARY, 0),
            cells_perturbed=(len(cells) - len(decision.reasons)) if dp_policy.enabled else 0,
            policy_digest=self.policy.digest,
            noise_mechanism=NoiseMechanism.NAME if dp_policy.enabled else "",
            noise_scales=tuple(
                NoiseScale(name, m.scale, m.epsilon) for name, m in mechanisms.items()
            ),
            epsilon_spent=charge.epsilon,
            epsilon_remaining=max(0.0, charge.remaining),
        )
        return (
            QueryTable(spec.name, spec.version, raw.query.group_by, tuple(out), summary),
            decision,
            releases,
        )

    @staticmethod
    def _margin_releases(
        request: RequestSpec, metric: str, guarded: Sequence[str],
        filters: dict[Dimension, tuple[str, ...]], cells: Sequence[RawCell],
        group: Sequence[int], rest: CellKey,
    ) -> list[Release]:
        out = []
        for name in guarded:
            family = family_of(metric, name)
            box = cell_box(request.period, rest, filters,
                           MEMBER_DIMENSIONS if family == "enrolled" else None)
            total = sum(int(_values(cells[i])[name]) for i in group)  # type: ignore[call-overload]
            out.append(Release(family, name, box, total))
        return out

    def _mechanisms(
        self, request: RequestSpec, spec: MetricSpec, raw: RawTable
    ) -> dict[str, NoiseMechanism]:
        dp_policy = self.policy.differential_privacy
        counted = [s for s in spec.statistics if s.kind in (StatKind.MEMBERS, StatKind.COUNT)]
        epsilon = dp_policy.epsilon_per_query / max(1, len(counted))
        months = len(request.period.months())
        by_time = any(d in (Dimension.MONTH, Dimension.QUARTER) for d in raw.query.group_by)
        out = {}
        for s in counted:
            if s.kind is StatKind.MEMBERS:
                sensitivity = months if by_time else 1
            elif s.name == "member_months":
                sensitivity = months
            else:
                sensitivity = dp_policy.count_bound * months
            out[s.name] = NoiseMechanism.for_epsilon(epsilon, sensitivity)
        return out


def _margin_groups(
    group_by: Sequence[Dimension], cells: Sequence[RawCell]
) -> list[tuple[tuple[int, ...], CellKey]]:
    """Every sum of the table's cells over a non-empty set of its member dimensions, as (the
    cells summed, the key of the sum). Member counts add up across member dimensions (up to
    members who changed plan or state within the period), never across months or categories,
    so only member dimensions are summed over."""
    summable = [d for d in group_by if d in MEMBER_DIMENSIONS]
    out: list[tuple[tuple[int, ...], CellKey]] = []
    for size in range(1, len(summable) + 1):
        for dropped in itertools.combinations(summable, size):
            groups: dict[CellKey, list[int]] = {}
            for i, cell in enumerate(cells):
                rest = tuple((d, v) for d, v in cell.key if d not in dropped)
                groups.setdefault(rest, []).append(i)
            out.extend((tuple(members), rest) for rest, members in groups.items())
    return out


def _pending_conflict(release: Release, threshold: int, pending: list[Release]) -> Release | None:
    for old in pending:
        if (old.family, old.statistic) != (release.family, release.statistic):
            continue
        if old.box != release.box and (
            release.box.within(old.box) or old.box.within(release.box)
        ) and 0 < abs(old.value - release.value) < threshold:
            return old
    return None
