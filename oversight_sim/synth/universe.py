"""The national provider and drug universe, shared by every carrier of a seed: providers
(NPIs with a taxonomy) per kind and state, and products (NDCs) per drug class."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa

from oversight_sim.synth.arrays import BoolArray, FloatArray, IntArray, Rng, _expand
from oversight_sim.synth.columns import _ids
from oversight_sim.synth.reference import (
    _DRUG_CLASSES,
    _N_SPECIALTY_OTHER,
    _PROVIDER_KINDS,
    _STATE_CODES,
    _STATE_WEIGHTS,
    _TAXONOMIES,
)


@dataclass(frozen=True)
class _Universe:
    npi: pa.Array
    kind: IntArray
    state: IntArray
    taxonomy: IntArray
    #: Provider index range of each (kind, state).
    start: IntArray
    count: IntArray
    ndc: pa.Array
    ndc_class: IntArray
    ndc_generic: BoolArray
    ndc_specialty: BoolArray
    ndc_cost30: FloatArray
    ndc_units: FloatArray
    #: NDC index range of each (class, generic, specialty).
    ndc_start: IntArray
    ndc_count: IntArray


def _npi_numbers(rng: Rng, n: int) -> IntArray:
    """Distinct 10-digit NPIs (first digit 1 or 2) with a valid Luhn check digit."""
    base = np.unique(rng.integers(100_000_000, 300_000_000, size=n + n // 10 + 100))
    base = rng.permutation(base)[:n]
    digits = np.stack([(base // 10**k) % 10 for k in range(9)], axis=1)  # k=0: rightmost
    doubled = digits[:, 0::2] * 2
    total = 24 + (doubled // 10 + doubled % 10).sum(axis=1) + digits[:, 1::2].sum(axis=1)
    check = (10 - total % 10) % 10
    return np.asarray(base * 10 + check, dtype=np.int64)


@cache
def _universe(seed: int) -> _Universe:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, 1)))
    n_states = len(_STATE_CODES)
    counts = np.zeros((len(_PROVIDER_KINDS), n_states), dtype=np.int64)
    for k, (_name, _entity, _tax, total) in enumerate(_PROVIDER_KINDS):
        counts[k] = np.maximum(2, np.round(total * _STATE_WEIGHTS)).astype(np.int64)
    flat = counts.ravel()
    owner, _within = _expand(flat)
    kind, state = owner // n_states, owner % n_states
    taxonomy = np.empty(len(owner), dtype=np.int64)
    tax_index = {t: i for i, t in enumerate(_TAXONOMIES)}
    for k, (_name, _entity, taxonomies, _total) in enumerate(_PROVIDER_KINDS):
        mask = kind == k
        choices = np.array([tax_index[t] for t in taxonomies])
        taxonomy[mask] = choices[rng.integers(0, len(choices), size=int(mask.sum()))]
    npi = _npi_numbers(rng, len(owner))
    start = (np.cumsum(flat) - flat).reshape(counts.shape)

    labelers = rng.choice(np.arange(1, 99_999), size=60, replace=False)
    rows: list[tuple[int, bool, bool, float, float]] = []
    for c, (name, _gshare, gcost, bcost, n_gen, n_brand) in enumerate(_DRUG_CLASSES):
        specialty = name == "specialty biologic"
        for i in range(n_gen):
            rows.append((c, True, False, gcost * (0.6 + 0.8 * i / max(n_gen - 1, 1)), 1.0))
        for i in range(n_brand):
            rows.append(
                (
                    c,
                    False,
                    specialty,
                    bcost * (0.5 + i / max(n_brand - 1, 1)),
                    1.0 if not specialty else 0.1,
                )
            )
        if name == "other":
            for i in range(_N_SPECIALTY_OTHER):
                rows.append((c, False, True, 5000.0 * (0.5 + i / _N_SPECIALTY_OTHER), 1.0))
    ndc_numbers = (
        labelers[rng.integers(0, len(labelers), size=len(rows))].astype(np.int64) * 1_000_000
        + rng.choice(np.arange(10_000), size=len(rows), replace=False) * 100
        + rng.choice(np.array([1, 5, 10, 30, 90]), size=len(rows))
    )
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], not rows[i][1], rows[i][2]))
    rows = [rows[i] for i in order]
    ndc_numbers = ndc_numbers[order]
    ndc_class = np.array([r[0] for r in rows], dtype=np.int64)
    generic = np.array([r[1] for r in rows])
    special = np.array([r[2] for r in rows])
    key = ndc_class * 4 + (~generic).astype(np.int64) * 2 + special.astype(np.int64)
    ndc_count = np.bincount(key, minlength=len(_DRUG_CLASSES) * 4).astype(np.int64)
    ndc_start = np.cumsum(ndc_count) - ndc_count
    return _Universe(
        npi=_ids("", npi, 10),
        kind=kind,
        state=state,
        taxonomy=taxonomy,
        start=start,
        count=counts,
        ndc=_ids("", ndc_numbers, 11),
        ndc_class=ndc_class,
        ndc_generic=generic,
        ndc_specialty=special,
        ndc_cost30=np.array([r[3] for r in rows]) * 100.0,
        ndc_units=np.array([r[4] for r in rows]),
        ndc_start=ndc_start,
        ndc_count=ndc_count,
    )
