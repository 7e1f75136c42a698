"""The carrier's disclosure policy: what it answers and how it protects what it releases."""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedoversight.catalogue import METRICS
from fedoversight.dimensions import Dimension
from fedoversight.domain import QuerySpec
from fedoversight.errors import ConfigError, PolicyRefusedError

#: The program floor: no released cell may rest on fewer members (CMS cell-size policy).
PROGRAM_FLOOR = 11


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


class Dominance(BaseModel):
    """The p% rule for dollar cells."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="apply the p% rule to dollar totals")
    p_percent: float = Field(
        default=10.0, gt=0, le=100,
        description="a dollar cell is suppressed when the total less its two largest member"
        " contributions is under p% of the largest (the runner-up could estimate the largest"
        " within p%)",
    )


class DifferentialPrivacy(BaseModel):
    """Optional OpenDP noise on released counts, under a persistent per-month budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="perturb released counts")
    epsilon_per_query: float = Field(default=0.5, gt=0, description="ε spent by one query")
    budget_per_month: float = Field(
        default=4.0, gt=0, description="total ε each calendar month may spend"
    )
    count_bound: int = Field(
        default=10, ge=1, description="most events one member may add to an event count"
    )


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
    dominance: Dominance = Field(default_factory=Dominance, description="p% rule")
    differencing_guard: bool = Field(
        default=True,
        description="refuse cells that differ from an earlier release by 1 to min-1 members",
    )
    differential_privacy: DifferentialPrivacy = Field(
        default_factory=DifferentialPrivacy, description="optional noise and budget"
    )

    @field_validator("min_cell_size")
    @classmethod
    def _floor(cls, value: int) -> int:
        if value < PROGRAM_FLOOR:
            raise ValueError(f"min_cell_size may not be below the program floor {PROGRAM_FLOOR}")
        return value

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        known = {m.name for m in METRICS}
        for name in value or ():
            if name not in known:
                raise ValueError(f"unknown metric {name!r} in policy")
        return value

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            return cls.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
            raise ConfigError(f"policy file {path.name}: {exc}") from exc

    @functools.cached_property
    def digest(self) -> str:
        """A short hash of the whole policy (the model is frozen, so it is worked out once)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def threshold_for(self, key_values: dict[str, str]) -> int:
        """The cell-size floor of a cell: stricter when it is keyed by a sensitive group."""
        floor = self.min_cell_size
        category = key_values.get("service_category_2")
        for group in self.sensitive_groups:
            if category is not None and category in group.service_categories:
                floor = max(floor, group.min_cell_size)
        return floor

    def answered_metrics(self) -> list[str]:
        names = self.metrics if self.metrics is not None else tuple(m.name for m in METRICS)
        return sorted(f"{m.name}@{m.version}" for m in METRICS if m.name in names)

    def check(self, query: QuerySpec) -> None:
        """Refuse a query this policy does not answer."""
        if self.metrics is not None and query.metric not in self.metrics:
            raise PolicyRefusedError("metric not answered by this carrier's policy")
        if self.dimensions is not None:
            used = set(query.group_by) | {d for d, _ in query.filters}
            if not used <= set(self.dimensions):
                raise PolicyRefusedError("dimension not answered by this carrier's policy")
