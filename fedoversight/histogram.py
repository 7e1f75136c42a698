"""The fixed log-spaced histogram every carrier uses, so carriers merge exactly.

Bin 0 holds values at or below zero; then 10 bins per decade from $1 to $10M (the first of
them also takes positive values below $1); the last bin holds $10M and above. Edges are whole
cents, so every engine puts a value in the same bin. Percentiles read from the merged bins are
exact to within half a bin (about 12% of the value at the bin's upper edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LAYOUT_VERSION = 1
DECADES = 7
BINS_PER_DECADE = 10
#: Lower edges, in cents, of bins 2..71 ($1 * 10**(k/10), rounded up to a whole cent).
EDGES_CENTS: tuple[int, ...] = tuple(
    math.ceil(100 * 10 ** (k / BINS_PER_DECADE)) for k in range(1, DECADES * BINS_PER_DECADE + 1)
)
N_BINS = len(EDGES_CENTS) + 2
#: Stated error bound of a percentile read from the bins, as a share of the value.
RELATIVE_ERROR_BOUND = (10 ** (1 / BINS_PER_DECADE) - 1) / 2


def bin_index(cents: int) -> int:
    if cents <= 0:
        return 0
    lo, hi = 0, len(EDGES_CENTS)
    while lo < hi:  # number of edges <= cents
        mid = (lo + hi) // 2
        if EDGES_CENTS[mid] <= cents:
            lo = mid + 1
        else:
            hi = mid
    return 1 + lo


def bin_bounds_cents(index: int) -> tuple[float, float]:
    if index == 0:
        return (-math.inf, 0.0)
    lower = 0.0 if index == 1 else float(EDGES_CENTS[index - 2])
    upper = math.inf if index == N_BINS - 1 else float(EDGES_CENTS[index - 1])
    return (lower, upper)


@dataclass(frozen=True)
class Histogram:
    counts: tuple[int, ...]
    sums_cents: tuple[int, ...]
    #: Bins a carrier withheld (their count and cents read 0 here); in a sum over carriers,
    #: the bins some carrier withheld.
    withheld_bins: tuple[int, ...] = ()

    @classmethod
    def empty(cls) -> Histogram:
        return cls((0,) * N_BINS, (0,) * N_BINS)

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            tuple(a + b for a, b in zip(self.sums_cents, other.sums_cents, strict=True)),
            tuple(sorted(set(self.withheld_bins) | set(other.withheld_bins))),
        )

    @property
    def total_count(self) -> int:
        return sum(self.counts)

    @property
    def total_cents(self) -> int:
        return sum(self.sums_cents)

    def percentile_dollars(self, q: float) -> float:
        """Value at quantile ``q`` (0..1): the geometric middle of the bin that holds it."""
        n = self.total_count
        if n == 0:
            return math.nan
        target = q * n
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if c and seen >= target:
                if i == 0:
                    return 0.0
                lower, upper = bin_bounds_cents(i)
                if math.isinf(upper):
                    return self.sums_cents[i] / c / 100
                lower = max(lower, 1.0)
                return math.sqrt(lower * upper) / 100
        return math.nan

    def top_share(self, fraction: float) -> float:
        """Share of the total held by the top ``fraction`` of values, from bin means."""
        n, total = self.total_count, self.total_cents
        if n == 0 or total <= 0:
            return math.nan
        remaining = fraction * n
        taken = 0.0
        for i in range(N_BINS - 1, -1, -1):
            c = self.counts[i]
            if not c or remaining <= 0:
                continue
            k = min(c, remaining)
            taken += self.sums_cents[i] / c * k
            remaining -= k
        return taken / total
