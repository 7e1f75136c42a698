"""What to generate: :class:`SynthConfig`, and the smallest carrier it allows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedoversight.errors import ConfigError

#: The smallest carrier :func:`oversight_sim.synth.carriers.carrier_sizes` makes.
MIN_CARRIER_MEMBERS = 30


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The same configuration always gives the same bytes."""

    #: Number of carriers (ids ``c001``, ``c002``, ...).
    carriers: int = 65
    #: Members across all carriers; the first carrier has about 70% of them.
    members: int = 20_000
    #: Seed of every random draw.
    seed: int = 7
    #: Calendar year of the claims (eligibility may start earlier).
    year: int = 2026
    #: Months of that year, from January, that have enrollment and claims (1..12).
    months: int = 12
    #: File format of the tables.
    file_format: Literal["parquet", "csv"] = "parquet"

    def __post_init__(self) -> None:
        if self.carriers < 1:
            raise ConfigError("carriers must be at least 1")
        if not 1 <= self.months <= 12:
            raise ConfigError("months must be between 1 and 12")
        if not 1900 < self.year < 2200:
            raise ConfigError("year out of range")
        if self.members < MIN_CARRIER_MEMBERS * self.carriers:
            raise ConfigError(f"members must be at least {MIN_CARRIER_MEMBERS} per carrier")
        if self.file_format not in ("parquet", "csv"):
            raise ConfigError("file_format must be parquet or csv")
