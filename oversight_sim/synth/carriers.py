"""Carriers: their ids, sizes and random generators, and what is fixed for a whole carrier
(plans and their cost sharing, home states, network, cost level, the data's window)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from fedoversight.errors import ConfigError
from oversight_sim.synth.arrays import BoolArray, IntArray, Rng, _day, _lognormal
from oversight_sim.synth.config import MIN_CARRIER_MEMBERS, SynthConfig
from oversight_sim.synth.reference import (
    _OON_ORG,
    _OON_PERSON,
    _PROVIDER_KINDS,
    _STATE_CODES,
    _STATE_WEIGHTS,
)
from oversight_sim.synth.universe import _Universe, _universe


def carrier_ids(n: int) -> list[str]:
    """``c001``, ``c002``, ... (zero-padded to three digits)."""
    return [f"c{i:03d}" for i in range(1, n + 1)]


def carrier_sizes(total_members: int, n: int, rng: Rng) -> IntArray:
    """Members per carrier: the first has about 70%, then a long tail of smaller carriers.

    Every carrier has at least ``MIN_CARRIER_MEMBERS``; the sizes add up to the total.
    """
    if n < 1 or total_members < MIN_CARRIER_MEMBERS * n:
        raise ConfigError(f"need at least {MIN_CARRIER_MEMBERS} members per carrier")
    if n == 1:
        return np.array([total_members], dtype=np.int64)
    floor = MIN_CARRIER_MEMBERS
    first = min(max(floor, round(0.7 * total_members)), total_members - floor * (n - 1))
    rest = total_members - first - floor * (n - 1)
    weights = np.sort(1.0 / np.arange(1, n) * _lognormal(rng, 0.3, n - 1))[::-1]
    share = rest * weights / weights.sum()
    extra = np.floor(share).astype(np.int64)
    remainder = rest - int(extra.sum())
    extra[np.argsort(-(share - extra), kind="stable")[:remainder]] += 1
    return np.concatenate([[first], floor + extra]).astype(np.int64)


@dataclass(frozen=True)
class _Plan:
    code: str
    hdhp: bool
    weight: float
    deductible: int  # cents
    coinsurance: float
    copay: int  # cents, office visit
    er_copay: int
    oop_max: int


@dataclass(frozen=True)
class _Carrier:
    """What is fixed for a whole carrier."""

    carrier_id: str
    config: SynthConfig
    plans: tuple[_Plan, ...]
    pshb_share: float
    home_states: IntArray
    national: bool
    cost_factor: float
    in_network: BoolArray  # per universe provider
    universe: _Universe
    window_start: int
    window_end: int


def _carrier_number(carrier_id: str) -> int:
    digits = "".join(ch for ch in carrier_id if ch.isdigit())
    return int(digits) if digits else zlib.crc32(carrier_id.encode())


def _plan_codes(carrier_id: str, n: int, rng: Rng) -> list[str]:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    alnum = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    k = _carrier_number(carrier_id)
    prefix = letters[(k // len(alnum)) % len(letters)] + alnum[k % len(alnum)]
    if n == 1:
        return [prefix]
    suffixes = rng.choice(list(alnum), size=n, replace=False)
    return [prefix + str(s) for s in suffixes]


def _make_carrier(carrier_id: str, members: int, config: SynthConfig, rng: Rng) -> _Carrier:
    universe = _universe(config.seed)
    n_plans = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.25, 0.15]))
    if members >= 0.3 * config.members and n_plans < 2:
        n_plans = 3  # the big national carriers always offer a choice of plans
    codes = _plan_codes(carrier_id, n_plans, rng)
    hdhp_plan = n_plans >= 2 and rng.random() < 0.5
    plans = []
    for i, code in enumerate(codes):
        hdhp = hdhp_plan and i == n_plans - 1
        plans.append(
            _Plan(
                code=code,
                hdhp=hdhp,
                weight=float(rng.uniform(0.3, 1.0)) * (0.15 if hdhp else 1.0),
                deductible=170_000 if hdhp else int(rng.choice([0, 35_000, 50_000, 75_000])),
                coinsurance=float(rng.choice([0.1, 0.15, 0.2])),
                copay=int(rng.choice([2_000, 2_500, 3_000])),
                er_copay=int(rng.choice([10_000, 15_000, 25_000])),
                oop_max=int(rng.choice([500_000, 650_000, 800_000])),
            )
        )
    national = members >= 0.3 * config.members or rng.random() < 0.3
    home = rng.choice(
        len(_STATE_CODES), size=int(rng.integers(1, 4)), replace=False, p=_STATE_WEIGHTS
    )
    oon_rate = np.where(
        np.array([e == "2" for _n, e, _t, _c in _PROVIDER_KINDS])[universe.kind],
        _OON_ORG,
        _OON_PERSON,
    )
    in_network = rng.random(len(universe.kind)) >= oon_rate
    window_end = _day(config.year + config.months // 12, config.months % 12 + 1, 1) - 1
    return _Carrier(
        carrier_id=carrier_id,
        config=config,
        plans=tuple(plans),
        pshb_share=float(np.clip(rng.normal(0.15, 0.04), 0.02, 0.4)),
        home_states=home.astype(np.int64),
        national=bool(national),
        cost_factor=float(np.exp(rng.normal(0.0, 0.06))),
        in_network=in_network,
        universe=universe,
        window_start=_day(config.year, 1, 1),
        window_end=window_end,
    )


def carrier_rng(config: SynthConfig, index: int) -> Rng:
    """The generator of the carrier at ``index`` (1-based, as in its id)."""
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(index,)))


def _sizes_rng(config: SynthConfig) -> Rng:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0, 0)))
