"""Array types and small numpy helpers: epoch days and months, expanding counts per owner,
sums and running sums by group."""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Rng = np.random.Generator


def _day(year: int, month: int, day: int) -> int:
    return (dt.date(year, month, day) - dt.date(1970, 1, 1)).days


def _month_of(days: IntArray) -> IntArray:
    """Months since January 1970 of epoch days."""
    return days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _month_start(months: IntArray) -> IntArray:
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _expand(counts: IntArray) -> tuple[IntArray, IntArray]:
    """For counts per owner: the owner of each item and the item's position within it."""
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    within = np.arange(len(owner), dtype=np.int64) - np.repeat(starts, counts)
    return owner, within


def _uniform_days(rng: Rng, low: IntArray, high: IntArray) -> IntArray:
    """A uniform day in [low, high] (inclusive) for each pair."""
    span = np.maximum(high - low + 1, 1)
    return np.asarray(low + np.floor(rng.random(len(low)) * span), dtype=np.int64)


def _lognormal(rng: Rng, sigma: float, size: int) -> FloatArray:
    """Mean-one lognormal noise."""
    return np.exp(sigma * rng.standard_normal(size) - sigma * sigma / 2)


def _group_sum(keys: IntArray, values: npt.ArrayLike, n: int) -> FloatArray:
    sums = np.bincount(keys, weights=np.asarray(values, dtype=np.float64), minlength=n)
    return np.asarray(sums, dtype=np.float64)


def _first_in_group(sorted_keys: IntArray) -> BoolArray:
    first = np.ones(len(sorted_keys), dtype=np.bool_)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def _cumsum_by_group(sorted_keys: IntArray, values: IntArray) -> IntArray:
    """Running sum of values within runs of equal keys (keys sorted), inclusive."""
    total = np.cumsum(values)
    first = _first_in_group(sorted_keys)
    starts = np.flatnonzero(first)
    base = (total - values)[starts]
    run = np.cumsum(first) - 1
    return np.asarray(total - base[run], dtype=np.int64)
