"""The node's disclosure control: raw tables of one request in, releasable tables out.

For every statistic of every cell, in order (``docs/disclosure.md`` says why):

1. **Minimum size** — a value resting on 1 to floor − 1 members is withheld (the floor is the
   policy's, stricter for a sensitive category's cell). Its *support*, the members with a
   non-zero contribution, is computed by the engine with the value; a member count's support
   is itself. A true zero (nobody contributes) is released as zero.
2. **Excluded counts** — a part of another statistic (screened of eligible, generic of all
   fills) is withheld when its rest (whole less part) rests on 1 to floor − 1 members.
3. **Sensitive categories** — in a cell of a sensitive category zero is withheld as well, so
   that withheld says nothing about presence; the engine lists every sensitive category for
   every other key of such a table.
4. **Perturbation** — every other value gets its consistent noise: counts from the
   perturbation table, dollar totals and quantities in proportion to their largest
   contribution (quantities both); histogram bins likewise, bin by bin. Under the strict
   option, differential privacy replaces this step (and decides minimum sizes on noisy
   counts, as post-processing).

Each table carries its disclosure summary: the method, its parameters, and what was withheld
and why; each withheld value what it leaves out (:class:`~fedoversight.domain.Missing`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from carrier_node.budget import Budget
from carrier_node.cells import RawCell, RawTable, Support
from carrier_node.disclosure.noise import (
    COUNT_DRAW,
    MAGNITUDE_DRAW,
    CountNoise,
    MagnitudeNoise,
    draw,
)
from carrier_node.disclosure.privacy import (
    GaussianNoise,
    PrivacyBudget,
    check_query,
    sensitivity,
)
from carrier_node.disclosure.secret import NodeSecret
from carrier_node.policy import Policy
from fedoversight.catalogue import (
    CATALOGUE_VERSION,
    MetricSpec,
    StatisticSpec,
    StatKind,
    get_metric,
)
from fedoversight.dimensions import Dimension
from fedoversight.domain import (
    CellResult,
    DisclosureSummary,
    Method,
    Missing,
    NoiseScale,
    Perturbation,
    QueryTable,
    RequestSpec,
    Status,
    StatValue,
    Withheld,
)
from fedoversight.histogram import Histogram
from fedoversight.periods import Period

log = logging.getLogger(__name__)

#: Cells decided between two looks at the request's time budget.
_CHECK_EVERY = 1024


@dataclass
class TableDecision:
    """What was done to one table's statistics (for the node's log and its benchmarks)."""

    metric: str
    withheld: Counter[Withheld] = field(default_factory=Counter)
    perturbed: int = 0
    released: int = 0

    def counts(self) -> dict[str, int]:
        return {str(reason): n for reason, n in sorted(self.withheld.items())}


@dataclass(frozen=True)
class _Cell:
    """One cell being decided: its floor, sensitivity and the months it can hold."""

    raw: RawCell
    floor: int
    sensitive: bool
    months_per_cell: int

    def value(self, name: str) -> int:
        return self.raw.value(name)


class Discloser:
    """Applies a carrier's policy to the raw tables of a request (see the module docstring)."""

    def __init__(
        self, policy: Policy, secret: NodeSecret, budget: PrivacyBudget | None = None
    ) -> None:
        self.policy = policy
        settings = policy.perturbation
        self._counts = CountNoise(settings.count_max_noise, settings.count_variance)
        self._magnitudes = MagnitudeNoise(settings.p_percent, settings.spread)
        self._noise_key = secret.noise_key
        self._key_version = secret.version
        self.budget = budget
        if self.method is Method.DIFFERENTIAL_PRIVACY and budget is None:
            raise ValueError("differential privacy needs a budget store")

    @property
    def method(self) -> Method:
        if self.policy.differential_privacy.enabled:
            return Method.DIFFERENTIAL_PRIVACY
        return Method.CELL_KEY if self.policy.perturbation.enabled else Method.NONE

    @property
    def perturbation(self) -> Perturbation | None:
        if self.method is not Method.CELL_KEY:
            return None
        p = self.policy.perturbation
        return Perturbation(
            p.count_max_noise, p.count_variance, p.p_percent, p.spread, self._key_version
        )

    # --- a request ----------------------------------------------------------------------------

    def check(self, request: RequestSpec) -> None:
        """Refuse, before anything is evaluated, what the method cannot answer."""
        if self.method is Method.DIFFERENTIAL_PRIVACY:
            for query in request.queries:
                check_query(query.group_by)

    def protect(
        self, request: RequestSpec, raws: Sequence[RawTable], budget: Budget | None = None
    ) -> tuple[list[QueryTable], list[TableDecision]]:
        """``budget``: checked as the cells are decided (its error ends the protection)."""
        budget = budget or Budget.unlimited()
        self.check(request)
        budget.check("disclosure control")
        charged = 0.0
        remaining = 0.0
        if self.method is Method.DIFFERENTIAL_PRIVACY:
            assert self.budget is not None
            charged = self.policy.differential_privacy.rho_per_query * len(raws)
            spent = self.budget.charge(
                [str(m) for m in request.period.months()], charged, request.request_id
            )
            remaining = max(0.0, self.budget.limit - max(spent.values(), default=0.0))
        out = [self._table(request, raw, budget) for raw in raws]
        tables = [
            dataclasses.replace(
                t,
                disclosure=dataclasses.replace(
                    t.disclosure, rho_spent=charged, rho_remaining=remaining
                ),
            )
            if self.method is Method.DIFFERENTIAL_PRIVACY
            else t
            for t, _ in out
        ]
        return tables, [d for _, d in out]

    # --- a table ------------------------------------------------------------------------------

    def _table(
        self, request: RequestSpec, raw: RawTable, budget: Budget
    ) -> tuple[QueryTable, TableDecision]:
        spec = get_metric(raw.query.metric, raw.query.version)
        decision = TableDecision(spec.name)
        categories = dict(raw.query.filters).get(Dimension.SERVICE_CATEGORY_2, ())
        months = len(request.period.months())
        per_cell = spec.months_per_cell(raw.query.group_by, months)
        gaussians = (
            self._gaussians(spec, raw, months)
            if (self.method is Method.DIFFERENTIAL_PRIVACY)
            else {}
        )
        cells: list[CellResult] = []
        for index, raw_cell in enumerate(raw.cells):
            if index % _CHECK_EVERY == 0:
                budget.check("disclosure control")
            key_values = {d.value: v for d, v in raw_cell.key}
            cell = _Cell(
                raw_cell,
                self.policy.threshold_for(key_values, categories),
                self.policy.is_sensitive(key_values, categories),
                per_cell,
            )
            if gaussians:
                result = self._private_cell(spec, cell, gaussians, decision)
                if result is not None:
                    cells.append(result)
                continue
            stats = tuple(self._statistic(spec, s, cell, decision) for s in spec.statistics)
            cells.append(CellResult(raw_cell.key, stats))
        return QueryTable(
            spec.name,
            spec.version,
            raw.query.group_by,
            tuple(cells),
            self._summary(cells, decision, gaussians),
        ), decision

    def _summary(
        self,
        cells: Sequence[CellResult],
        decision: TableDecision,
        gaussians: dict[str, GaussianNoise],
    ) -> DisclosureSummary:
        withheld = [sum(1 for s in c.stats if s.status.withheld) for c in cells]
        return DisclosureSummary(
            min_cell_size=self.policy.min_cell_size,
            cells_released=sum(1 for w in withheld if w == 0),
            cells_withheld=sum(
                1 for c, w in zip(cells, withheld, strict=True) if w and w == len(c.stats)
            ),
            cells_partly_withheld=sum(
                1 for c, w in zip(cells, withheld, strict=True) if 0 < w < len(c.stats)
            ),
            cells_perturbed=sum(
                1 for c in cells if any(s.status is Status.PERTURBED for s in c.stats)
            ),
            policy_digest=self.policy.digest,
            method=self.method,
            perturbation=self.perturbation,
            withheld=tuple(sorted(decision.withheld.items())),
            noise_mechanism=GaussianNoise.NAME if gaussians else "",
            noise_scales=tuple(NoiseScale(n, g.scale, g.rho) for n, g in gaussians.items()),
        )

    # --- one statistic ------------------------------------------------------------------------

    def _statistic(
        self, spec: MetricSpec, stat: StatisticSpec, cell: _Cell, decision: TableDecision
    ) -> StatValue:
        if stat.kind is StatKind.HISTOGRAM:
            return self._histogram(stat, cell, decision)
        value = cell.value(stat.name)
        support = cell.raw.support(stat.name)
        reason = self._rule(spec, stat, cell, support)
        if reason is not None:
            decision.withheld[reason] += 1
            return StatValue(stat.name, Status.WITHHELD, None, self._missing(stat, cell, reason))
        if value == 0 and support.members == 0 and stat.by_members:
            decision.released += 1
            return StatValue(stat.name, Status.RELEASED, 0)  # nobody: nothing to hide
        if self.method is Method.NONE:
            decision.released += 1
            return StatValue(stat.name, Status.RELEASED, value)
        decision.perturbed += 1
        return StatValue(stat.name, Status.PERTURBED, value + self._noise(stat, value, support))

    def _rule(
        self, spec: MetricSpec, stat: StatisticSpec, cell: _Cell, support: Support
    ) -> Withheld | None:
        """Why a value must be withheld, if it must (steps 1 to 3)."""
        if not stat.by_members:
            return None  # no people behind it (rebates)
        if cell.sensitive and support.members < cell.floor:
            return Withheld.SENSITIVE
        if 0 < support.members < cell.floor:
            return Withheld.SMALL
        if stat.part_of is not None:
            if stat.kind is StatKind.MEMBERS:
                rest = cell.value(stat.part_of) - cell.value(stat.name)
            else:
                rest = support.rest
            if 0 < rest < cell.floor:
                return Withheld.REST
        return None

    def _missing(self, stat: StatisticSpec, cell: _Cell, reason: Withheld) -> Missing:
        """What a withheld value leaves out, as far as that can be said without disclosing."""
        if reason is Withheld.REST:
            return Missing(1, reason=reason)  # the part is large: its whole bounds it
        members = cell.floor - 1
        at_most: int | None = None
        if stat.kind is StatKind.MEMBERS:
            at_most = members
        elif stat.bound == 1:  # one per member month at most (member months)
            at_most = members * cell.months_per_cell
        return Missing(1, at_most, members, reason)

    def _noise(self, stat: StatisticSpec, value: int, support: Support) -> int:
        """The value's consistent noise (see :mod:`carrier_node.disclosure.noise`)."""
        parts = (support.key_low, support.key_high, support.members, value)
        noise = 0
        if stat.kind in (StatKind.MEMBERS, StatKind.COUNT, StatKind.AMOUNT):
            noise += self._counts.noise(draw(self._noise_key, COUNT_DRAW, *parts))
        if stat.kind.magnitude:
            u = draw(self._noise_key, MAGNITUDE_DRAW, *parts, support.top)
            noise += self._magnitudes.noise(u, support.top)
        return noise

    def _histogram(self, stat: StatisticSpec, cell: _Cell, decision: TableDecision) -> StatValue:
        """Bin by bin: a bin of 1 to floor − 1 members is withheld, the others perturbed (the
        count from the table, the cents in proportion to the bin's largest total)."""
        histogram = cell.raw.histogram(stat.name)
        if self.method is Method.DIFFERENTIAL_PRIVACY:
            decision.withheld[Withheld.PRIVACY] += 1
            return StatValue(stat.name, Status.WITHHELD, None, Missing(1, reason=Withheld.PRIVACY))
        if 0 < histogram.total_count < cell.floor:
            decision.withheld[Withheld.SMALL] += 1
            members = cell.floor - 1
            return StatValue(
                stat.name, Status.WITHHELD, None, Missing(1, None, members, Withheld.SMALL)
            )
        counts, sums = list(histogram.counts), list(histogram.sums_cents)
        withheld: list[int] = []
        for index, support in enumerate(cell.raw.bin_supports(stat.name)):
            if support is None:
                continue
            if support.members < cell.floor:
                counts[index] = sums[index] = 0
                withheld.append(index)
            elif self.method is Method.CELL_KEY:
                parts = (support.key_low, support.key_high, support.members)
                counts[index] += self._counts.noise(
                    draw(self._noise_key, COUNT_DRAW, *parts, support.members)
                )
                sums[index] += self._magnitudes.noise(
                    draw(self._noise_key, MAGNITUDE_DRAW, *parts, sums[index], support.top),
                    support.top,
                )
        released = Histogram(tuple(counts), tuple(sums), tuple(withheld))
        missing = None
        if withheld:
            decision.withheld[Withheld.SMALL] += 1
            missing = Missing(1, None, (cell.floor - 1) * len(withheld), Withheld.SMALL)
        status = Status.PERTURBED if self.method is Method.CELL_KEY else Status.RELEASED
        if status is Status.PERTURBED:
            decision.perturbed += 1
        return StatValue(stat.name, status, released, missing)

    # --- differential privacy -----------------------------------------------------------------

    def _gaussians(self, spec: MetricSpec, raw: RawTable, months: int) -> dict[str, GaussianNoise]:
        """Each statistic's noise: the table's ρ shared by the statistics released."""
        released: dict[str, float] = {}
        for stat in spec.statistics:
            scale = (
                sensitivity(spec, stat, raw.query.group_by, months)
                if (stat.by_members and stat.kind is not StatKind.HISTOGRAM)
                else None
            )
            if scale is not None:
                released[stat.name] = scale
        rho = self.policy.differential_privacy.rho_per_query / max(1, len(released))
        return {n: GaussianNoise.for_rho(rho, v) for n, v in released.items()}

    def _private_cell(
        self,
        spec: MetricSpec,
        cell: _Cell,
        gaussians: dict[str, GaussianNoise],
        decision: TableDecision,
    ) -> CellResult | None:
        """A cell under differential privacy; None when its noisy people fall below the floor
        (the cell is then not listed: its presence would disclose)."""
        noisy: dict[str, int] = {}
        for stat in spec.statistics:
            gaussian = gaussians.get(stat.name)
            if gaussian is None or stat.kind is StatKind.HISTOGRAM:
                continue
            support = cell.raw.support(stat.name)
            value = cell.value(stat.name) if support.clamped is None else support.clamped
            noisy[stat.name] = gaussian.release(value)
        people = next(s.name for s in spec.statistics if s.kind is StatKind.MEMBERS)
        if noisy[people] < cell.floor:
            return None
        stats = []
        for stat in spec.statistics:
            if stat.kind is StatKind.HISTOGRAM:
                stats.append(self._histogram(stat, cell, decision))
                continue
            if stat.name not in noisy:  # no member contributes: not personal data
                value, support = cell.value(stat.name), cell.raw.support(stat.name)
                decision.perturbed += 1
                stats.append(
                    StatValue(
                        stat.name, Status.PERTURBED, value + self._noise(stat, value, support)
                    )
                )
                continue
            rests_on = stat.name if stat.kind is StatKind.MEMBERS else stat.rests_on
            assert rests_on is not None
            reason: Withheld | None = None
            if noisy[rests_on] < cell.floor:
                reason = Withheld.SMALL
            elif (
                stat.part_of is not None
                and stat.kind is StatKind.MEMBERS
                and (0 < noisy[stat.part_of] - noisy[stat.name] < cell.floor)
            ):
                reason = Withheld.REST
            if reason is not None:
                decision.withheld[reason] += 1
                stats.append(
                    StatValue(stat.name, Status.WITHHELD, None, self._missing(stat, cell, reason))
                )
                continue
            decision.perturbed += 1
            stats.append(StatValue(stat.name, Status.PERTURBED, noisy[stat.name]))
        return CellResult(cell.raw.key, tuple(stats))


def protect_table(
    raw: RawTable, policy: Policy, period: Period, secret: NodeSecret | None = None
) -> QueryTable:
    """One table through the pipeline on its own (tools and tests; differential privacy,
    which needs the node's budget, is left out)."""
    single = policy.model_copy(
        update={
            "differential_privacy": policy.differential_privacy.model_copy(
                update={"enabled": False}
            )
        }
    )
    now = dt.datetime.now(dt.UTC)
    request = RequestSpec(
        request_id="local",
        round_id="local",
        catalogue_version=CATALOGUE_VERSION,
        period=period,
        queries=(raw.query,),
        issued_at=now,
        expires_at=now,
        nonce=b"\0" * 16,
    )
    tables, _ = Discloser(single, secret or NodeSecret.generate()).protect(request, [raw])
    return tables[0]
