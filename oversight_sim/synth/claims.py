"""Medical claims before they have lines: the claim record that episodes and encounters
make, and how their providers and service days are picked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oversight_sim.synth.arrays import BoolArray, IntArray, Rng, _day, _uniform_days
from oversight_sim.synth.carriers import _Carrier
from oversight_sim.synth.members import _Members
from oversight_sim.synth.reference import _STATE_CODES, _STATE_WEIGHTS


@dataclass(frozen=True)
class _Claims:
    """Medical claims before they have lines (one entry per claim)."""

    member: IntArray
    template: IntArray
    start: IntArray
    end: IntArray
    admit: IntArray  # -1: null
    discharge: IntArray  # -1: null
    status: IntArray  # discharge status, -1: null
    drg: IntArray  # -1: null
    bill: IntArray  # -1: drawn from the template
    billing: IntArray  # provider (universe index) that bills
    other: IntArray  # attending (institutional) or service facility (professional), -1: none
    pool: IntArray  # which budget pays for it
    dx1: IntArray
    driver: IntArray  # the condition behind dx1, -1: none
    movable: BoolArray  # a one-day encounter that may be misdated outside enrollment


def _concat_claims(parts: Sequence[_Claims]) -> _Claims:
    names = list(_Claims.__dataclass_fields__)
    if not parts:
        e = np.zeros(0, dtype=np.int64)
        return _Claims(
            member=e,
            template=e,
            start=e,
            end=e,
            admit=e,
            discharge=e,
            status=e,
            drg=e,
            bill=e,
            billing=e,
            other=e,
            pool=e,
            dx1=e,
            driver=e,
            movable=np.zeros(0, dtype=np.bool_),
        )
    return _Claims(*(np.concatenate([getattr(p, name) for p in parts]) for name in names))


def _pick(car: _Carrier, m: _Members, member: IntArray, kind: IntArray | int, rng: Rng) -> IntArray:
    """Providers of the given kinds for these members: mostly in-state, mostly their usual."""
    n = len(member)
    kinds = np.broadcast_to(np.asarray(kind, dtype=np.int64), (n,))
    state = m.state[member]
    away = (state < 0) | (rng.random(n) < 0.08)
    state = np.where(away, rng.choice(len(_STATE_CODES), size=n, p=_STATE_WEIGHTS), state)
    # Mostly the member's usual provider; otherwise one of the big ones.
    u = np.where(rng.random(n) < 0.85, m.preference[member] ** 2.5, rng.random(n) ** 6)
    count = car.universe.count[kinds, state]
    return np.asarray(
        car.universe.start[kinds, state] + np.floor(count * u).astype(np.int64), dtype=np.int64
    )


def _days_in_window(
    car: _Carrier, rng: Rng, first: IntArray, last: IntArray, elective: BoolArray
) -> IntArray:
    """Uniform days in [first, last]; elective ones about 20% likelier in December."""
    day = _uniform_days(rng, first, last)
    if car.config.months < 12 or not elective.any():
        return day
    dec_first, dec_last = _day(car.config.year, 12, 1), car.window_end
    overlap = np.maximum(np.minimum(last, dec_last) - np.maximum(first, dec_first) + 1, 0)
    total = last - first + 1
    w = 0.2 * overlap / (total + 0.2 * overlap)
    to_dec = elective & (overlap > 0) & (rng.random(len(day)) < w)
    dec_day = _uniform_days(rng, np.maximum(first, dec_first), np.minimum(last, dec_last))
    return np.where(to_dec, dec_day, day)
