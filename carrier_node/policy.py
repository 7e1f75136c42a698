"""The carrier's disclosure policy: what it answers and how it protects what it releases."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedoversight.catalogue import metrics
from fedoversight.config import describe_validation_error
from fedoversight.dimensions import Dimension
from fedoversight.domain import Purpose, QuerySpec
from fedoversight.errors import (
    ConfigError,
    PolicyRefusedError,
    PurposeDimensionError,
    PurposeGranularityError,
    PurposeMissingError,
    PurposeRefusedError,
    PurposeScopeError,
)

#: The program floor: no released cell may rest on fewer members (CMS cell-size policy).
PROGRAM_FLOOR = 11

#: Largest request answered by default, in estimated cells: the monthly suite over a year is
#: about 300, the whole catalogue by month, age band, sex and state over a year about 390,000.
DEFAULT_MAX_REQUEST_CELLS = 1_000_000


def _prefix_ranges(prefixes: tuple[str, ...]) -> str:
    """``F10, F11, …, F19, B20`` as ``F10–F19, B20``: runs of consecutive numbered prefixes
    sharing a letter."""
    out: list[str] = []
    run: list[str] = []

    def close() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else f"{run[0]}–{run[-1]}")
            run.clear()

    for prefix in prefixes:
        if run and _follows(run[-1], prefix):
            run.append(prefix)
        else:
            close()
            run.append(prefix)
    close()
    return ", ".join(out)


def _follows(before: str, after: str) -> bool:
    head, tail = before[:1], before[1:]
    return (
        tail.isdigit()
        and after[:1] == head
        and after[1:].isdigit()
        and len(after) == len(before)
        and int(after[1:]) == int(tail) + 1
    )


class SensitiveGroup(BaseModel):
    """A group of diagnoses and service categories released only at a stricter cell size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="what the group is")
    dx_prefixes: tuple[str, ...] = Field(
        default=(), description="ICD-10-CM prefixes (without dots) of the group"
    )
    service_categories: tuple[str, ...] = Field(
        default=(), description="level-2 service categories of the group"
    )
    min_cell_size: int = Field(default=20, description="cell size floor for the group's cells")

    @field_validator("min_cell_size")
    @classmethod
    def _floor(cls, value: int) -> int:
        if value < PROGRAM_FLOOR:
            raise ValueError(f"min_cell_size may not be below the program floor {PROGRAM_FLOOR}")
        return value


DEFAULT_SENSITIVE_GROUPS = (
    SensitiveGroup(
        name="substance use",
        dx_prefixes=tuple(f"F{n}" for n in range(10, 20)),
        service_categories=("inpatient substance use", "outpatient substance use"),
    ),
    SensitiveGroup(name="HIV", dx_prefixes=("B20", "Z21")),
    SensitiveGroup(
        name="mental health",
        dx_prefixes=tuple(f"F{n}" for n in range(20, 49)),
        service_categories=("inpatient psychiatric", "outpatient psychiatric"),
    ),
)


class Perturbation(BaseModel):
    """Consistent (cell-key) perturbation of every released value: the default protection.
    See ``docs/disclosure.md``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="perturb released values (off releases exact values that many"
        " overlapping queries can difference: for validation against known data only)",
    )
    count_max_noise: int = Field(
        default=5, ge=1, le=10, description="counts move by at most this much either way"
    )
    count_variance: float = Field(
        default=3.0, gt=0, description="variance of the noise added to counts"
    )
    p_percent: float = Field(
        default=10.0,
        gt=0,
        le=100,
        description="dollar totals and quantities move by at least this percent of their"
        " largest member contribution, so no contributor's value can be estimated closer",
    )
    spread: float = Field(
        default=0.5,
        ge=0,
        le=2,
        description="...and by at most p_percent × (1 + spread) percent of it",
    )
    key_version: int = Field(
        default=1,
        ge=1,
        description="version of the node's disclosure secret: raising it draws new noise for"
        " every value (do it only with a new policy version; never lower it)",
    )

    @model_validator(mode="after")
    def _table(self) -> Perturbation:
        widest = self.count_max_noise * (self.count_max_noise + 1) / 3
        if self.count_variance >= widest:
            raise ValueError(
                f"count_variance must be below {widest:.3g} for count_max_noise"
                f" {self.count_max_noise}"
            )
        return self


class DifferentialPrivacy(BaseModel):
    """Formal differential privacy (zCDP) instead of cell-key perturbation: OpenDP's Gaussian
    mechanism on every statistic with a per-member bound, under a persistent per-month budget.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="release under differential privacy")
    rho_per_query: float = Field(
        default=0.05, gt=0, description="ρ (zCDP) one query spends, shared by its statistics"
    )
    budget_per_month: float = Field(
        default=1.0, gt=0, description="total ρ each calendar month may spend"
    )


_PURPOSE_CODE = re.compile(r"[a-z][a-z0-9-]{0,63}")


class PurposeRule(BaseModel):
    """What the carrier answers for one purpose (narrower than the policy's own lists)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: tuple[str, ...] | None = Field(
        default=None, description="metric names answered for the purpose (all when absent)"
    )
    dimensions: tuple[Dimension, ...] | None = Field(
        default=None,
        description="dimensions a query of the purpose may group or filter by (all when absent)",
    )
    max_group_by: int | None = Field(
        default=None, ge=0, description="most dimensions one query of the purpose may group by"
    )
    forbidden_groupings: tuple[tuple[Dimension, ...], ...] = Field(
        default=(),
        description="combinations of dimensions no query of the purpose may group by together"
        ' (e.g. [["month", "age_band", "sex"]]: a grouping holding all three is refused)',
    )

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        known = {m.name for m in metrics()}
        for name in value or ():
            if name not in known:
                raise ValueError(f"unknown metric {name!r} in a purpose rule")
        return value


class PurposePolicy(BaseModel):
    """Which declared purposes the carrier accepts, and what it answers for each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    require: bool = Field(
        default=False,
        description="refuse requests that declare no purpose (those of coordinators that"
        " predate purposes)",
    )
    accepted: tuple[str, ...] | None = Field(
        default=None,
        description="purpose codes accepted (any purpose when absent); others are refused",
    )
    rules: dict[str, PurposeRule] = Field(
        default_factory=dict, description="per purpose code: what is answered for it"
    )

    @model_validator(mode="after")
    def _codes(self) -> PurposePolicy:
        for code in (*(self.accepted or ()), *self.rules):
            if not _PURPOSE_CODE.fullmatch(code):
                raise ValueError(f"purpose code {code!r}: lowercase letters, digits and '-'")
        if self.accepted is not None:
            stray = sorted(set(self.rules) - set(self.accepted))
            if stray:
                raise ValueError(f"rules for purposes not accepted: {stray}")
        return self


class Policy(BaseModel):
    """A carrier's policy file (TOML), validated; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cell_size: int = Field(
        default=PROGRAM_FLOOR,
        description="smallest member count a released cell may rest on (never below 11)",
    )
    metrics: tuple[str, ...] | None = Field(
        default=None, description="metric names answered (all of the catalogue when absent)"
    )
    dimensions: tuple[Dimension, ...] | None = Field(
        default=None, description="dimensions a query may group or filter by (all when absent)"
    )
    release_mode: Literal["auto", "manual"] = Field(
        default="auto", description="auto: results go out at once; manual: a person approves"
    )
    sensitive_groups: tuple[SensitiveGroup, ...] = Field(
        default=DEFAULT_SENSITIVE_GROUPS,
        description="diagnosis and service-category groups released at stricter cell sizes",
    )
    perturbation: Perturbation = Field(
        default_factory=Perturbation, description="consistent perturbation (the default)"
    )
    differential_privacy: DifferentialPrivacy = Field(
        default_factory=DifferentialPrivacy,
        description="formal differential privacy instead (the strict option)",
    )
    purposes: PurposePolicy = Field(
        default_factory=PurposePolicy,
        description="which declared purposes are accepted, and what is answered for each",
    )
    max_request_cells: int = Field(
        default=DEFAULT_MAX_REQUEST_CELLS,
        ge=1,
        description="largest request answered, in cells estimated from the request alone"
        " (group-by cardinalities x months x queries); a larger one is refused before it runs",
    )

    @field_validator("min_cell_size")
    @classmethod
    def _floor(cls, value: int) -> int:
        if value < PROGRAM_FLOOR:
            raise ValueError(f"min_cell_size may not be below the program floor {PROGRAM_FLOOR}")
        return value

    @model_validator(mode="after")
    def _noise_below_floor(self) -> Policy:
        # A perturbed count then never reads 0 (which means none) nor below zero.
        if self.perturbation.count_max_noise >= self.min_cell_size:
            raise ValueError("perturbation.count_max_noise must be below min_cell_size")
        return self

    @property
    def sensitive_categories(self) -> tuple[str, ...]:
        """Level-2 service categories of the sensitive groups (always listed in full)."""
        return tuple(sorted({c for g in self.sensitive_groups for c in g.service_categories}))

    def is_sensitive(self, key_values: dict[str, str], categories: tuple[str, ...] = ()) -> bool:
        """Whether a cell is of a sensitive group (see :meth:`threshold_for`)."""
        sensitive = self.sensitive_categories
        return key_values.get("service_category_2") in sensitive or any(
            c in sensitive for c in categories
        )

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        known = {m.name for m in metrics()}
        for name in value or ():
            if name not in known:
                raise ValueError(f"unknown metric {name!r} in policy")
        return value

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"policy file {path} is not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                f"invalid policy in {path}:\n{describe_validation_error(exc)}"
            ) from exc

    @functools.cached_property
    def digest(self) -> str:
        """A short hash of the whole policy (the model is frozen, so it is worked out once)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def threshold_for(self, key_values: dict[str, str], categories: tuple[str, ...] = ()) -> int:
        """The floor of a cell: stricter when it is keyed by a sensitive group's category, or
        when its query keeps only rows of ``categories`` (a level-2 filter) and one of them is
        a sensitive group's."""
        floor = self.min_cell_size
        for category in (key_values.get("service_category_2"), *categories):
            for group in self.sensitive_groups:
                if category is not None and category in group.service_categories:
                    floor = max(floor, group.min_cell_size)
        return floor

    def answered_metrics(self) -> list[str]:
        declared = metrics()
        names = self.metrics if self.metrics is not None else tuple(m.name for m in declared)
        return sorted(f"{m.name}@{m.version}" for m in declared if m.name in names)

    def summary(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The policy in words, by section: (title, [(setting, what it says)]), for
        ``carrier-node policy show``."""
        declared = metrics()
        if self.metrics is None:
            answered = f"all {len({m.name for m in declared})} metrics of the catalogue"
        else:
            answered = f"{len(self.metrics)} named: " + ", ".join(sorted(self.metrics))
        if self.dimensions is None:
            dims = "any dimension of the catalogue"
        else:
            dims = ", ".join(sorted(str(d) for d in self.dimensions)) or "none (totals only)"
        release = (
            "automatic: each result is sent as soon as it is computed"
            if self.release_mode == "auto"
            else "manual: a person approves each result (carrier-node approve)"
        )
        answers = [
            ("metrics", answered),
            ("dimensions", dims),
            ("release", release),
            ("largest request", f"{self.max_request_cells:,} cells, estimated before it runs"),
        ]
        purposes = self.purposes
        accepted = (
            "any declared purpose"
            if purposes.accepted is None
            else ", ".join(purposes.accepted) or "none"
        )
        answers.append(
            (
                "purposes",
                accepted
                + ("; a purpose is required" if purposes.require else "; requests without one too"),
            )
        )
        for code, rule in sorted(purposes.rules.items()):
            parts = []
            if rule.metrics is not None:
                parts.append("metrics " + ", ".join(sorted(rule.metrics)))
            if rule.dimensions is not None:
                parts.append(
                    "dimensions " + (", ".join(sorted(map(str, rule.dimensions))) or "none")
                )
            if rule.max_group_by is not None:
                parts.append(f"at most {rule.max_group_by} grouping dimensions")
            for combination in rule.forbidden_groupings:
                parts.append("never " + " x ".join(map(str, combination)))
            answers.append((f"for {code}", "; ".join(parts) or "as above"))
        sizes = [
            (
                "minimum cell size",
                f"{self.min_cell_size} members (program floor {PROGRAM_FLOOR})",
            )
        ]
        for group in self.sensitive_groups:
            parts = [f"at least {group.min_cell_size} members"]
            if group.dx_prefixes:
                parts.append("diagnoses " + _prefix_ranges(group.dx_prefixes))
            if group.service_categories:
                parts.append("service categories " + ", ".join(group.service_categories))
            sizes.append((f"sensitive: {group.name}", "; ".join(parts)))
        p, dp = self.perturbation, self.differential_privacy
        if dp.enabled:
            protection = [
                ("method", "differential privacy (zCDP, Gaussian noise)"),
                ("per query", f"ρ = {dp.rho_per_query:g}"),
                ("budget", f"ρ = {dp.budget_per_month:g} per calendar month"),
            ]
        elif p.enabled:
            low, high = p.p_percent, p.p_percent * (1 + p.spread)
            protection = [
                ("method", "consistent (cell-key) perturbation"),
                ("counts", f"move by at most ±{p.count_max_noise} (variance {p.count_variance:g})"),
                (
                    "dollars and quantities",
                    f"move by {low:g}% to {high:g}% of their largest member contribution",
                ),
                ("noise key version", str(p.key_version)),
            ]
        else:
            protection = [
                (
                    "method",
                    "NONE: exact values under the cell-size rules only (validation data only)",
                )
            ]
        return [
            ("What the node answers", answers),
            ("Cell sizes", sizes),
            ("Protection of released values", protection),
        ]

    def check_purpose(self, purpose: Purpose | None) -> None:
        """Refuse a request whose declared purpose this policy does not accept."""
        if purpose is None:
            if self.purposes.require:
                raise PurposeMissingError("no purpose declared")
            return
        accepted = self.purposes.accepted
        if accepted is not None and purpose.code not in accepted:
            raise PurposeRefusedError(f"purpose {purpose.code} not accepted")

    def check_for_purpose(self, purpose: Purpose | None, query: QuerySpec) -> None:
        """Refuse a query this policy does not answer for the request's purpose."""
        rule = self.purposes.rules.get(purpose.code) if purpose is not None else None
        if rule is None:
            return
        if rule.metrics is not None and query.metric not in rule.metrics:
            raise PurposeScopeError("metric not answered for the purpose")
        used = set(query.group_by) | {d for d, _ in query.filters}
        if rule.dimensions is not None and not used <= set(rule.dimensions):
            raise PurposeDimensionError("dimension not answered for the purpose")
        if rule.max_group_by is not None and len(query.group_by) > rule.max_group_by:
            raise PurposeGranularityError("too many grouping dimensions for the purpose")
        grouped = set(query.group_by)
        for combination in rule.forbidden_groupings:
            if combination and set(combination) <= grouped:
                raise PurposeGranularityError("a grouping the purpose forbids")

    def check(self, query: QuerySpec) -> None:
        """Refuse a query this policy does not answer."""
        if self.metrics is not None and query.metric not in self.metrics:
            raise PolicyRefusedError("metric not answered by this carrier's policy")
        if self.dimensions is not None:
            used = set(query.group_by) | {d for d, _ in query.filters}
            if not used <= set(self.dimensions):
                raise PolicyRefusedError("dimension not answered by this carrier's policy")
