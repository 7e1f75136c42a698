"""A scenario's carriers on disk: synthetic directories (of given sizes, with planted groups),
many carriers spread over a few datasets, or the carriers' own directories."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oversight_sim.canned import spread
from oversight_sim.plant import plant_groups
from oversight_sim.scenario import Scenario
from oversight_sim.synth import MIN_CARRIER_MEMBERS, SynthConfig, write_carriers
from oversight_sim.synth.carriers import carrier_ids


@dataclass(frozen=True)
class Refresh:
    """After round ``after_round``, carrier ``carrier`` replaces its files with
    ``directory``'s (late claims arrived)."""

    after_round: int
    carrier: str
    directory: Path


@dataclass(frozen=True)
class CarrierSet(Mapping[str, Path]):
    """Carrier id to data directory, read-only (shared between tests: replace a carrier's
    files with ``Federation.replace_files``, never in place)."""

    dirs: Mapping[str, Path]
    refreshes: tuple[Refresh, ...] = ()
    #: The distinct synthetic datasets under a large (canned) federation's carriers.
    datasets: tuple[Path, ...] = field(default=())

    def __getitem__(self, carrier: str) -> Path:
        return self.dirs[carrier]

    def __iter__(self) -> Iterator[str]:
        return iter(self.dirs)

    def __len__(self) -> int:
        return len(self.dirs)


def skewed_sizes(members: int, carriers: int, skew: float) -> list[int]:
    """``members`` split over ``carriers`` in proportion to rank ** -skew, each at least the
    synthetic minimum."""
    if members < MIN_CARRIER_MEMBERS * carriers:
        raise ValueError(f"members must be at least {MIN_CARRIER_MEMBERS} per carrier")
    weights = np.arange(1, carriers + 1, dtype=float) ** -skew
    rest = members - MIN_CARRIER_MEMBERS * carriers
    share = rest * weights / weights.sum()
    extra = np.floor(share).astype(int)
    extra[np.argsort(-(share - extra), kind="stable")[: rest - int(extra.sum())]] += 1
    return [MIN_CARRIER_MEMBERS + int(e) for e in extra]


def _sized(root: Path, scenario: Scenario, sizes: list[int]) -> dict[str, Path]:
    """One synthetic carrier per size, each from its own seed, named in order."""
    dirs: dict[str, Path] = {}
    for index, (carrier, size) in enumerate(zip(carrier_ids(len(sizes)), sizes, strict=True)):
        scratch = root / f".{carrier}"
        (written,) = write_carriers(
            scratch,
            SynthConfig(
                carriers=1,
                members=size,
                seed=scenario.seed * 10_007 + index,
                year=scenario.year,
                months=scenario.months,
                file_format=scenario.file_format,
            ),
        )
        written.rename(root / carrier)
        shutil.rmtree(scratch)
        dirs[carrier] = root / carrier
    return dirs


def write_carrier_set(scenario: Scenario, root: Path) -> CarrierSet:
    """Write ``scenario``'s carriers under ``root`` (an empty directory); the same scenario
    always gives the same files."""
    if scenario.data_dirs:
        return CarrierSet(dict(sorted(scenario.data_dirs.items())))
    root.mkdir(parents=True, exist_ok=True)
    config = (
        SynthConfig(
            carriers=scenario.datasets or scenario.carriers,
            members=scenario.members,
            seed=scenario.seed,
            year=scenario.year,
            months=scenario.months,
            file_format=scenario.file_format,
        )
        if scenario.sizes is None and scenario.skew is None
        else None
    )
    if scenario.datasets:
        assert config is not None
        datasets = tuple(write_carriers(root / "datasets", config))
        return CarrierSet(spread(list(datasets), scenario.carriers), datasets=datasets)
    if config is not None:
        dirs = {d.name: d for d in write_carriers(root, config)}
    else:
        sizes = (
            list(scenario.sizes)
            if scenario.sizes is not None
            else skewed_sizes(scenario.members, scenario.carriers, scenario.skew or 0.0)
        )
        dirs = _sized(root, scenario, sizes)
    refreshes: list[Refresh] = []
    by_carrier: dict[str, list[int]] = {}
    for index, plant in enumerate(scenario.plant):
        if plant.carrier not in dirs:
            raise ValueError(f"planted group in unknown carrier {plant.carrier!r}")
        by_carrier.setdefault(plant.carrier, []).append(index)
    for carrier, indexes in sorted(by_carrier.items()):
        planted = plant_groups(dirs[carrier], [scenario.plant[i] for i in indexes], scenario.year)
        refreshes.extend(Refresh(r, carrier, d) for r, d in planted.refreshes)
    return CarrierSet(
        dict(sorted(dirs.items())), tuple(sorted(refreshes, key=lambda r: r.after_round))
    )
