"""Carriers, block by block: the members, pharmacy and medical claims of each block of
members, then the carrier's providers and rebates tables. :func:`generate_carrier` returns
them as frames; :func:`oversight_sim.synth.files.write_carriers` writes them part by part."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedoversight.errors import ConfigError
from fedoversight.schema import PROVIDERS, REBATES, TABLES
from oversight_sim.synth.arrays import IntArray, Rng, _group_sum
from oversight_sim.synth.carriers import _Carrier, _make_carrier
from oversight_sim.synth.claims import _concat_claims
from oversight_sim.synth.codes import _check_reference_codes
from oversight_sim.synth.columns import _codes, _frame, _money, _plain, _schema_table, _table
from oversight_sim.synth.config import SynthConfig
from oversight_sim.synth.encounters import _event_claims, _forced_events, _sampled_events
from oversight_sim.synth.episodes import (
    _DELIVERY,
    _DIALYSIS,
    _HOSPICE_HOME,
    _HOSPICE_INPATIENT,
    _NEWBORN,
    _NICU,
    _episode_claims,
    _episodes,
)
from oversight_sim.synth.medical import _expected_claim_lines, _medical_table
from oversight_sim.synth.members import _eligibility_table, _members
from oversight_sim.synth.pharmacy import _pharmacy, _pharmacy_table
from oversight_sim.synth.reference import (
    _DRUG_CLASSES,
    _PROVIDER_KINDS,
    _REBATE_RATE,
    _STATE_CODES,
    _TAXONOMIES,
)

logger = logging.getLogger(__name__)

#: Members generated at once; larger carriers are made (and written) block by block, so memory
#: stays bounded whatever the carrier's size.
BLOCK_MEMBERS = 20_000
#: Medical claim lines per member per year the generator aims at.
_LINES_PER_YEAR = 51.0


@dataclass
class _Totals:
    """What carries over from one block of a carrier to the next."""

    members: int = 0
    claims: int = 0
    fills: int = 0
    providers: list[IntArray] = field(default_factory=list)
    rx_by_quarter_class: IntArray = field(
        default_factory=lambda: np.zeros((4, len(_DRUG_CLASSES)), dtype=np.int64)
    )


def _block(car: _Carrier, n: int, totals: _Totals, rng: Rng) -> dict[str, pa.Table]:
    m = _members(car, totals.members + 1, n, rng)
    fills = _pharmacy(car, m, rng)
    rx = _group_sum(fills.member, fills.allowed, m.n) / 100
    floor = np.where(m.latent > 0, 40 + 80 * rng.random(m.n), 0.0)
    budget = np.maximum(m.latent * m.member_months / 12 - rx, floor)

    episodes, weight = _episodes(car, m, budget, rng)
    # Some episodes need a minimum budget whatever the latent cost says.
    minimum = np.zeros(m.n)
    for kind, dollars in (
        (_DELIVERY, 12_000.0),
        (_NEWBORN, 3_000.0),
        (_NICU, 45_000.0),
        (_HOSPICE_HOME, 12_000.0),
        (_HOSPICE_INPATIENT, 15_000.0),
    ):
        np.maximum.at(minimum, episodes.member[episodes.kind == kind], dollars)
    dial = episodes.member[episodes.kind == _DIALYSIS]
    np.add.at(minimum, dial, 7_000.0)
    budget = np.maximum(budget, minimum)
    has_episode = np.bincount(episodes.member, minlength=m.n) > 0
    episode_share = np.where(has_episode, rng.uniform(0.55, 0.85, m.n), 0.0)
    member_weight = _group_sum(episodes.member, weight, m.n)
    episode_budget = (
        (budget * episode_share)[episodes.member]
        * weight
        / np.maximum(member_weight[episodes.member], 1e-9)
    )
    remaining = budget * (1 - episode_share)

    episode_claims = _episode_claims(car, m, episodes, m.n, rng)
    f_member, f_kind, f_day, f_dx1, f_driver = _forced_events(car, m, rng)
    forced_claims = _event_claims(car, m, f_member, f_kind, f_day, f_dx1, f_driver, rng)
    target = (
        _LINES_PER_YEAR * float(m.member_months.sum()) / 12
        - _expected_claim_lines(episode_claims)
        - _expected_claim_lines(forced_claims)
    )
    s_member, s_kind, s_day = _sampled_events(car, m, remaining, target, rng)
    none = np.full(len(s_member), -1, dtype=np.int64)
    sampled_claims = _event_claims(car, m, s_member, s_kind, s_day, none, none, rng)
    claims = _concat_claims([episode_claims, forced_claims, sampled_claims])
    budgets = np.concatenate([remaining, episode_budget])

    medical, n_claims, providers = _medical_table(car, m, claims, budgets, totals.claims, rng)
    pharmacy, n_fills, by_quarter_class = _pharmacy_table(car, m, fills, totals.fills, rng)
    totals.members += n
    totals.claims += n_claims
    totals.fills += n_fills
    totals.providers.append(providers)
    totals.rx_by_quarter_class += by_quarter_class
    return {
        "eligibility": _eligibility_table(car, m),
        "medical_claims": medical,
        "pharmacy_claims": pharmacy,
    }


def _providers_table(car: _Carrier, totals: _Totals) -> pa.Table:
    u = car.universe
    used = (
        np.unique(np.concatenate(totals.providers))
        if totals.providers
        else np.zeros(0, dtype=np.int64)
    )
    npi = u.npi.take(pa.array(used))
    order = np.asarray(pc.sort_indices(npi))
    used = used[order]
    entity = np.array([1 if e == "2" else 0 for _n, e, _t, _c in _PROVIDER_KINDS])[u.kind[used]]
    columns: dict[str, pa.Array] = {
        "npi": u.npi.take(pa.array(used)),
        "entity_type": _codes(("1", "2"), entity),
        "taxonomy": _codes(_TAXONOMIES, u.taxonomy[used]),
        "state": _codes(_STATE_CODES, u.state[used]),
        "in_network": pa.array(car.in_network[used]),
    }
    return _table(PROVIDERS, columns)


def _rebates_table(car: _Carrier, totals: _Totals, rng: Rng) -> pa.Table:
    quarters = (car.config.months + 2) // 3
    allowed = totals.rx_by_quarter_class[:quarters]
    q, c = np.nonzero(allowed > 0)
    rate = np.array([_REBATE_RATE[name] for name, *_rest in _DRUG_CLASSES])[c]
    rebate = np.round(allowed[q, c] * rate * rng.uniform(0.9, 1.1, len(q))).astype(np.int64)
    labels = [f"{car.config.year}Q{i + 1}" for i in range(4)]
    columns: dict[str, pa.Array] = {
        "quarter": _codes(labels, q),
        "drug_class": _codes([name for name, *_rest in _DRUG_CLASSES], c),
        "ndc": pa.nulls(len(q), type=pa.string()),
        "rebate_amount": _money(rebate),
    }
    return _table(REBATES, columns)


def _carrier_tables(
    carrier_id: str, members: int, config: SynthConfig, rng: Rng
) -> Iterator[tuple[str, pa.Table]]:
    """A carrier's tables as (name, part) pairs: member blocks first, then the summaries."""
    if members < 1:
        raise ConfigError("a carrier needs at least one member")
    _check_reference_codes()
    car = _make_carrier(carrier_id, members, config, rng)
    n_blocks = -(-members // BLOCK_MEMBERS)
    sizes = np.full(n_blocks, members // n_blocks, dtype=np.int64)
    sizes[: members % n_blocks] += 1
    totals = _Totals()
    for size, block_rng in zip(sizes, rng.spawn(n_blocks), strict=True):
        yield from _block(car, int(size), totals, block_rng).items()
    yield "providers", _providers_table(car, totals)
    yield "rebates", _rebates_table(car, totals, rng)
    logger.debug(
        "synthesised carrier: %d members, %d claims, %d fills",
        totals.members,
        totals.claims,
        totals.fills,
    )


def generate_carrier(
    carrier_id: str, members: int, config: SynthConfig, rng: Rng
) -> dict[str, pd.DataFrame]:
    """One carrier's tables by name (Arrow-backed frames with the schema's types)."""
    parts: dict[str, list[pa.Table]] = {t.name: [] for t in TABLES}
    for name, table in _carrier_tables(carrier_id, members, config, rng):
        parts[name].append(_plain(table, _schema_table(name)))
    return {name: _frame(pa.concat_tables(tables)) for name, tables in parts.items()}
