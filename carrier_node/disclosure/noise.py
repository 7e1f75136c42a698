"""Consistent noise: a perturbation table for counts, proportional noise for magnitudes, and
the keyed draw that makes both a function of a cell's contents.

The draw (:func:`draw`) is HMAC-SHA256 under the node's noise key of a statistic's *cell
key*: the least and greatest record key of the members it rests on, how many they are, and
its value (and, for magnitudes, its largest contribution). The same contents give the same
draw, in any query, metric or restart; a change of contents (a member more, a late claim that
moves the value) gives a fresh, independent one. Without the node's key nobody can compute a
draw, so the noise of a released value is unknown to everyone but the node.

Counts (:class:`CountNoise`) take their noise from a perturbation table in the manner of the
cell key method used by national statistical offices: a distribution on the integers from
−D to D with mean 0 and variance V, the maximum-entropy one under those constraints (a
discretised normal, p(k) ∝ exp(−λk²)). Magnitudes (:class:`MagnitudeNoise`) are moved by
between p% and p%·(1 + spread) of the largest contribution of one member, either way: no
contributor's value can be estimated to within p% from the released total.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass, field
from functools import cached_property

#: Kinds of draws: a count and a magnitude with the same contents draw apart.
COUNT_DRAW = "count"
MAGNITUDE_DRAW = "magnitude"


def draw(key: bytes, kind: str, *parts: object) -> float:
    """A number in [0, 1) that only ``key``'s holder can compute, the same for the same
    ``kind`` and ``parts`` and independent across different ones."""
    text = "\x1f".join([kind, *("" if p is None else str(p) for p in parts)])
    digest = hmac.digest(key, text.encode(), hashlib.sha256)
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class CountNoise:
    """The perturbation table of counts: noise in [−max_noise, max_noise], mean 0, the given
    variance."""

    max_noise: int
    variance: float
    _cdf: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_noise < 1:
            raise ValueError("max_noise must be at least 1")
        uniform = self.max_noise * (self.max_noise + 1) / 3  # the widest variance on the range
        if not 0 < self.variance < uniform:
            raise ValueError(
                f"variance must be in (0, {uniform:.3g}) for max_noise {self.max_noise}"
            )
        probabilities = self.probabilities
        total, cdf = 0.0, []
        for p in probabilities:
            total += p
            cdf.append(total)
        object.__setattr__(self, "_cdf", tuple(cdf))

    @cached_property
    def probabilities(self) -> tuple[float, ...]:
        """P(noise = k) for k = −max_noise ... max_noise."""
        ks = range(-self.max_noise, self.max_noise + 1)

        def variance_at(lam: float) -> tuple[float, list[float]]:
            weights = [math.exp(-lam * k * k) for k in ks]
            total = sum(weights)
            probs = [w / total for w in weights]
            return sum(p * k * k for p, k in zip(probs, ks, strict=True)), probs

        low, high = 0.0, 1.0
        while variance_at(high)[0] > self.variance:  # widen until the variance is below
            high *= 2
        for _ in range(200):  # the variance falls as lambda grows
            mid = (low + high) / 2
            if variance_at(mid)[0] > self.variance:
                low = mid
            else:
                high = mid
        return tuple(variance_at((low + high) / 2)[1])

    def noise(self, u: float) -> int:
        """The noise at draw ``u`` (inverse of the table's distribution)."""
        for k, bound in enumerate(self._cdf):
            if u < bound:
                return k - self.max_noise
        return self.max_noise

    @property
    def zero_probability(self) -> float:
        return self.probabilities[self.max_noise]


@dataclass(frozen=True)
class MagnitudeNoise:
    """Noise of a magnitude: its sign and a size between ``p_percent`` and
    ``p_percent × (1 + spread)`` percent of the largest contribution, both from one draw."""

    p_percent: float
    spread: float

    def __post_init__(self) -> None:
        if not 0 < self.p_percent <= 100 or not 0 <= self.spread <= 10:
            raise ValueError("p_percent must be in (0, 100] and spread in [0, 10]")

    def noise(self, u: float, largest: int) -> int:
        """The noise at draw ``u`` for a total whose largest contribution is ``largest``."""
        sign = -1 if u < 0.5 else 1
        within = (u % 0.5) * 2  # the rest of the draw, uniform on [0, 1)
        size = self.p_percent / 100 * abs(largest) * (1 + self.spread * within)
        return sign * max(1, math.ceil(size)) if largest else 0

    @property
    def standard_deviation_share(self) -> float:
        """The noise's standard deviation as a share of the largest contribution."""
        p, s = self.p_percent / 100, self.spread
        # E[(1 + s·w)²] for w uniform on [0, 1): 1 + s + s²/3 (the sign makes the mean 0).
        return p * math.sqrt(1 + s + s * s / 3)
