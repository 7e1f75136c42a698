"""Code vocabularies and vectorised choices between codes.

Arrays of codes are integer indices into the vocabularies built here from the reference values
and the claim templates (-1 is null). :class:`_Choices` draws one field's alternatives;
:class:`_ChoiceTable` draws, for many claims or lines at once, from each one's own template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedoversight.codelists import drg_types
from fedoversight.errors import ConfigError
from oversight_sim.synth.arrays import FloatArray, IntArray, Rng
from oversight_sim.synth.reference import (
    _CONDITIONS,
    _DRG_ANTEPARTUM,
    _DRG_CESAREAN,
    _DRG_CPT,
    _DRG_DX,
    _DRG_MEDICAL,
    _DRG_NEWBORN,
    _DRG_NICU,
    _DRG_PSYCH,
    _DRG_REHAB,
    _DRG_SUBSTANCE,
    _DRG_SURGICAL,
    _DRG_VAGINAL,
    _DX_POOLS,
    _PK,
    _TYPE1_DIABETES,
)
from oversight_sim.synth.templates import _I, _KINDS, _TEMPLATES, _alts


@dataclass(frozen=True)
class _Vocab:
    """Code vocabularies; arrays of codes are integer indices into these (-1 = null)."""

    hcpcs: tuple[str, ...]
    revenue: tuple[str, ...]
    pos: tuple[str, ...]
    bill_type: tuple[str, ...]
    dx: tuple[str, ...]
    drg: tuple[str, ...]

    @staticmethod
    def index(values: tuple[str, ...]) -> dict[str, int]:
        return {v: i for i, v in enumerate(values)}


def _build_vocab() -> _Vocab:
    hcpcs: set[str] = set(_DRG_CPT.values())
    revenue: set[str] = set()
    pos: set[str] = set()
    bills: set[str] = {"112", "114"}
    for claim in _TEMPLATES:
        pos.update(_alts(claim.pos)[0])
        bills.update(_alts(claim.bill_type)[0])
        for line in claim.lines:
            hcpcs.update(_alts(line.hcpcs)[0])
            revenue.update(_alts(line.revenue)[0])
    hcpcs.update(("99221", "99222", "99223", "99231", "99232", "99233", "99238", "99239"))
    dx: set[str] = set(_DRG_DX.values()) | set(_TYPE1_DIABETES)
    for _name, codes in _CONDITIONS:
        dx.update(codes)
    for codes in _DX_POOLS.values():
        dx.update(codes)
    drgs = (
        *_DRG_MEDICAL,
        *_DRG_SURGICAL,
        *_DRG_VAGINAL,
        *_DRG_CESAREAN,
        *_DRG_ANTEPARTUM,
        *_DRG_NEWBORN,
        *_DRG_NICU,
        *_DRG_PSYCH,
        *_DRG_SUBSTANCE,
        *_DRG_REHAB,
    )
    return _Vocab(
        hcpcs=tuple(sorted(hcpcs)),
        revenue=tuple(sorted(revenue)),
        pos=tuple(sorted(pos)),
        bill_type=tuple(sorted(bills)),
        dx=tuple(sorted(dx)),
        drg=tuple(sorted(set(drgs))),
    )


_VOCAB = _build_vocab()
_HCPCS = _VOCAB.index(_VOCAB.hcpcs)
_REV = _VOCAB.index(_VOCAB.revenue)
_POS = _VOCAB.index(_VOCAB.pos)
_BILL = _VOCAB.index(_VOCAB.bill_type)
_DX = _VOCAB.index(_VOCAB.dx)
_DRGI = _VOCAB.index(_VOCAB.drg)


@dataclass(frozen=True)
class _Choices:
    """Alternatives of one code field as vocabulary indices and probabilities."""

    index: IntArray
    p: FloatArray

    @classmethod
    def of(cls, text: str, vocab: dict[str, int]) -> _Choices:
        codes, weights = _alts(text)
        w = np.array(weights, dtype=np.float64)
        return cls(np.array([vocab[c] for c in codes], dtype=np.int64), w / w.sum())

    def draw(self, rng: Rng, size: int) -> IntArray:
        if len(self.index) == 0:
            return np.full(size, -1, dtype=np.int64)
        if len(self.index) == 1:
            return np.full(size, self.index[0], dtype=np.int64)
        cum = np.cumsum(self.p)
        cum[-1] = 1.0
        return self.index[np.searchsorted(cum, rng.random(size), side="right")]


@dataclass(frozen=True)
class _ChoiceTable:
    """Many :class:`_Choices` at once: ``draw(groups)`` draws from each item's own group."""

    values: IntArray
    keys: FloatArray  # group + cumulative probability, increasing

    @classmethod
    def of(cls, groups: Sequence[_Choices]) -> _ChoiceTable:
        values: list[IntArray] = []
        keys: list[FloatArray] = []
        for g, choice in enumerate(groups):
            if len(choice.index) == 0:
                values.append(np.array([-1], dtype=np.int64))
                keys.append(np.array([g + 1.0]))
                continue
            cum = np.cumsum(choice.p)
            cum[-1] = 1.0
            values.append(choice.index)
            keys.append(g + cum)
        return cls(np.concatenate(values), np.concatenate(keys))

    def draw(self, groups: IntArray, rng: Rng) -> IntArray:
        u = groups + rng.random(len(groups))
        return np.asarray(self.values[np.searchsorted(self.keys, u, side="right")], dtype=np.int64)


_TEMPLATE_POS = _ChoiceTable.of([_Choices.of(t.pos, _POS) for t in _TEMPLATES])
_TEMPLATE_BILL = _ChoiceTable.of([_Choices.of(t.bill_type, _BILL) for t in _TEMPLATES])
_SPECS = [(t, s, line) for t, tmpl in enumerate(_TEMPLATES) for s, line in enumerate(tmpl.lines)]
_SPEC_HCPCS = _ChoiceTable.of([_Choices.of(line.hcpcs, _HCPCS) for _t, _s, line in _SPECS])
_SPEC_REV = _ChoiceTable.of([_Choices.of(line.revenue, _REV) for _t, _s, line in _SPECS])
_SPEC_SEQ = np.array([s for _t, s, _line in _SPECS], dtype=np.int64)
_SPEC_P = np.array([line.p for _t, _s, line in _SPECS])
_SPEC_WEIGHT = np.array([line.weight for _t, _s, line in _SPECS])
_SHARE_CODE = {"copay": 0, "coins": 1, "none": 2}
_SPEC_SHARE = np.array([_SHARE_CODE[line.share] for _t, _s, line in _SPECS], dtype=np.int64)
_TEMPLATE_SPEC_COUNT = np.array([len(t.lines) for t in _TEMPLATES], dtype=np.int64)
_TEMPLATE_SPEC_START = np.cumsum(_TEMPLATE_SPEC_COUNT) - _TEMPLATE_SPEC_COUNT
_TEMPLATE_DAILY = np.array([t.daily for t in _TEMPLATES])
_DX_POOL_CHOICES = {name: _Choices.of(" ".join(codes), _DX) for name, codes in _DX_POOLS.items()}
_CONDITION_CHOICES = tuple(_Choices.of(" ".join(codes), _DX) for _n, codes in _CONDITIONS)
_KIND_DX = _ChoiceTable.of([_DX_POOL_CHOICES[k.dx] for k in _KINDS])
_INSTITUTIONAL = np.array([t.claim_type == _I for t in _TEMPLATES])
_TEMPLATE_PROVIDER = np.array([_PK[t.provider] for t in _TEMPLATES], dtype=np.int64)
_TEMPLATE_OTHER = np.array([_PK[t.other] if t.other else -1 for t in _TEMPLATES], dtype=np.int64)


def _check_reference_codes() -> None:
    """The DRGs used must be current codes of the shipped MS-DRG list."""
    known = drg_types()
    missing = [d for d in _VOCAB.drg if known.get(d) not in ("M", "P")]
    if missing:
        raise ConfigError(f"MS-DRG codes not in the shipped list: {missing}")
