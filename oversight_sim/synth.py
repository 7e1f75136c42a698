"""Synthetic carrier data in the DESIGN schema: vectorised (numpy), calibrated, reproducible.

Each carrier is a directory holding one file per table of :mod:`fedoversight.schema`
(``NAME.parquet`` or ``NAME.csv``). The same :class:`SynthConfig` gives byte-identical files:
every carrier draws from its own generator, derived from ``(seed, carrier index)`` with
:class:`numpy.random.SeedSequence`, and the writers put no timestamps anywhere.

How the data are made. Members come in families (subscriber, spouse, children) with an
enrollee type, ages, a state and one of the carrier's plans; enrollment is one contiguous
interval per member, written as one span or, for a mid-year plan switch, two adjacent spans.
Each member has a latent annual allowed cost (zero for about one in eight, a lognormal body,
a band of complex members and a heavy Pareto tail). Pharmacy fills come first (chronic
prescriptions refilled every 30 or 90 days, acute fills, monthly specialty fills); what is left
of the member's cost goes to medical care: expensive episodes (acute stays with transfers and
readmissions, skilled nursing, home health, hospice, dialysis) take a share, and ordinary
encounters (office, telehealth, emergency, lab, imaging, surgery, therapy, behavioural health
and more), whose number grows with the cost, take the rest. Amounts are relative prices scaled
to each member's budget, so the published figures hold by construction.

Claim versions (medical claims). A paid claim is version 1 with status ``paid``. A reversed
claim has its version-1 rows plus version-2 rows with status ``reversed`` and negated amounts.
An adjusted claim has version 1 (``paid``), version 2 (``reversed``, negated) and version 3
(``adjusted``, the new amounts). So dollar totals over all rows net out, and the *final action*
of a claim line is its highest version: it counts in utilisation when that version is ``paid``
or ``adjusted``. Denied lines have zero allowed and paid amounts, a ``denial_reason`` and no
paid date. A reversed fill is a second row of the same pharmacy ``claim_id`` with status
``reversed`` and negated amounts.

Frames returned by :func:`generate_carrier` and :func:`read_carrier` are Arrow-backed
(:class:`pandas.ArrowDtype`) with exactly the types written to Parquet: codes ``string``,
dates ``date32``, money ``decimal128(18, 2)``, flags ``bool``, counts ``int64`` and
quantities ``double``.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedoversight.codelists import drg_types
from fedoversight.errors import ConfigError
from fedoversight.schema import (
    ELIGIBILITY,
    MEDICAL_CLAIMS,
    PHARMACY_CLAIMS,
    PROVIDERS,
    REBATES,
    TABLES,
    ColumnType,
    Table,
)

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Rng = np.random.Generator

#: Members generated at once; larger carriers are made (and written) block by block, so memory
#: stays bounded whatever the carrier's size.
BLOCK_MEMBERS = 20_000
#: The smallest carrier :func:`carrier_sizes` makes.
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
            raise ConfigError(
                f"members must be at least {MIN_CARRIER_MEMBERS} per carrier"
            )
        if self.file_format not in ("parquet", "csv"):
            raise ConfigError("file_format must be parquet or csv")


# --------------------------------------------------------------------------------------------
# Reference values
# --------------------------------------------------------------------------------------------

#: State, relative weight (population, with the federal workforce's tilt to DC, MD and VA).
_STATES: tuple[tuple[str, float], ...] = (
    ("CA", 39.5), ("TX", 29.1), ("FL", 21.5), ("NY", 20.2), ("PA", 13.0), ("IL", 12.8),
    ("OH", 11.8), ("GA", 10.7), ("NC", 10.4), ("MI", 10.1), ("NJ", 9.3), ("VA", 17.2),
    ("WA", 7.7), ("AZ", 7.2), ("MA", 7.0), ("TN", 6.9), ("IN", 6.8), ("MD", 12.4),
    ("MO", 6.2), ("WI", 5.9), ("CO", 5.8), ("MN", 5.7), ("SC", 5.1), ("AL", 5.0),
    ("LA", 4.7), ("KY", 4.5), ("OR", 4.2), ("OK", 4.0), ("CT", 3.6), ("UT", 3.3),
    ("IA", 3.2), ("NV", 3.1), ("AR", 3.0), ("MS", 3.0), ("KS", 2.9), ("NM", 2.1),
    ("NE", 2.0), ("ID", 1.8), ("WV", 1.8), ("HI", 1.5), ("NH", 1.4), ("ME", 1.4),
    ("RI", 1.1), ("MT", 1.1), ("DE", 1.0), ("SD", 0.9), ("ND", 0.8), ("AK", 0.7),
    ("DC", 4.2), ("VT", 0.6), ("WY", 0.6),
)
_STATE_CODES = tuple(s for s, _ in _STATES)
_STATE_WEIGHTS = np.array([w for _, w in _STATES]) / sum(w for _, w in _STATES)

_SEXES = ("F", "M", "U")
_PROGRAMS = ("FEHB", "PSHB")
_RELATIONSHIPS = ("self", "spouse", "child")
_ENROLLEE_TYPES = ("active", "annuitant", "survivor")
_TIERS = ("self", "self_plus_one", "family")
_DENIAL_REASONS = ("CO-50", "CO-97", "CO-16", "CO-18", "CO-29", "CO-197", "PR-204", "CO-151")
_DISCHARGE = ("01", "02", "03", "06", "07", "20", "30", "50", "62")
_DS = {code: i for i, code in enumerate(_DISCHARGE)}
_STATUSES = ("paid", "denied", "reversed", "adjusted")
_CHANNELS = ("retail", "mail", "specialty")

#: Provider kinds: name, entity type, taxonomies, size of the national pool.
_PROVIDER_KINDS: tuple[tuple[str, str, tuple[str, ...], int], ...] = (
    ("hospital", "2", ("282N00000X",), 2500),
    ("psych_hospital", "2", ("283Q00000X",), 300),
    ("rehab_hospital", "2", ("283X00000X",), 250),
    ("asc", "2", ("261QA1903X",), 1500),
    ("lab", "2", ("291U00000X",), 800),
    ("dialysis", "2", ("261QE0700X",), 800),
    ("snf", "2", ("314000000X",), 1500),
    ("hha", "2", ("251E00000X",), 1200),
    ("hospice", "2", ("251G00000X",), 800),
    ("dme", "2", ("332B00000X",), 800),
    ("ambulance", "2", ("3416L0300X", "3416A0800X"), 1000),
    ("urgent", "2", ("261QU0200X",), 1000),
    ("pcp", "1", ("207Q00000X", "207R00000X", "208000000X", "363LF0000X"), 15000),
    ("specialist", "1", ("207X00000X", "207N00000X", "207RC0000X", "207RG0100X",
                         "207W00000X", "207Y00000X", "207RE0101X"), 8000),
    ("emergency", "1", ("207P00000X",), 3000),
    ("radiologist", "1", ("2085R0202X",), 2000),
    ("hospitalist", "1", ("208M00000X",), 2500),
    ("surgeon", "1", ("208600000X", "207XX0004X", "207VG0400X"), 3000),
    ("anesthesia", "1", ("207L00000X",), 1500),
    ("obgyn", "1", ("207V00000X",), 1500),
    ("psych", "1", ("2084P0800X", "103T00000X", "1041C0700X"), 3500),
    ("therapist", "1", ("225100000X", "225X00000X", "235Z00000X"), 2500),
    ("substance", "1", ("101YA0400X", "2084A0401X"), 800),
    ("nephrology", "1", ("207RN0300X",), 600),
)
_PK = {name: i for i, (name, *_rest) in enumerate(_PROVIDER_KINDS)}
_TAXONOMIES = tuple(sorted({t for _, _, ts, _ in _PROVIDER_KINDS for t in ts}))
#: Out-of-network share of providers (organisations, individuals).
_OON_ORG, _OON_PERSON = 0.05, 0.09

#: Drug classes: name, generic share, generic and brand cost per 30 days ($), NDCs (generic,
#: brand). "specialty biologic" is all specialty; "other" also has specialty NDCs.
_DRUG_CLASSES: tuple[tuple[str, float, float, float, int, int], ...] = (
    ("antidiabetic", 0.70, 9.0, 640.0, 8, 8),
    ("statin", 0.97, 6.0, 260.0, 6, 3),
    ("antihypertensive", 0.97, 7.0, 190.0, 12, 4),
    ("antidepressant", 0.94, 10.0, 360.0, 10, 4),
    ("specialty biologic", 0.0, 0.0, 6500.0, 0, 14),
    ("opioid analgesic", 0.92, 14.0, 210.0, 6, 3),
    ("antibiotic", 0.96, 12.0, 110.0, 10, 3),
    ("other", 0.90, 13.0, 420.0, 30, 15),
)
_DRUG = {name: i for i, (name, *_rest) in enumerate(_DRUG_CLASSES)}
_N_SPECIALTY_OTHER = 8
#: Rebate as a share of a class's allowed (before a +-10% draw).
_REBATE_RATE = {
    "antidiabetic": 0.24, "statin": 0.15, "antihypertensive": 0.15, "antidepressant": 0.17,
    "specialty biologic": 0.25, "opioid analgesic": 0.15, "antibiotic": 0.15, "other": 0.19,
}

#: Members' conditions and their ICD-10-CM codes (without dots).
_CONDITIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("diabetes", ("E119", "E1165", "E1122", "E1140", "E1169")),
    ("hypertension", ("I10",)),
    ("hyperlipidemia", ("E785", "E7800")),
    ("mental", ("F329", "F331", "F411", "F419", "F4310", "F200", "F250", "F429", "F4001")),
    ("substance", ("F1020", "F1120", "F1220", "F17210", "F1010", "F1420")),
    ("hiv", ("B20", "Z21")),
    ("ckd", ("N186", "N184")),
    ("copd", ("J449",)),
    ("chf", ("I5022",)),
    ("cancer", ("C50911", "C61", "C3490", "C189")),
    ("pregnancy", ("Z3480",)),
)
_C = {name: i for i, (name, _codes) in enumerate(_CONDITIONS)}
_TYPE1_DIABETES = ("E109", "E1065")

#: Principal diagnoses of ordinary encounters, by theme.
_DX_POOLS: dict[str, tuple[str, ...]] = {
    "general": ("Z0000", "J069", "M545", "R51", "K219", "J029", "N390", "R1084", "M25561",
                "L309", "H6590", "Z23", "R05", "J0190", "M79604", "R6883", "K5900", "Z1211"),
    "child": ("Z00129", "J069", "H6690", "J029", "R509", "L209", "Z23", "J45909", "B349"),
    "injury": ("S93401A", "S6090XA", "S0990XA", "S8290XA", "T148XXA", "W19XXXA", "S39012A"),
    "acute": ("R079", "R1010", "R0602", "R55", "J189", "N179", "R42", "K922", "I4891"),
    "imaging": ("M545", "R1030", "M25561", "R0789", "R928", "M5416", "R519", "N2889"),
    "surgery": ("K5730", "H2513", "M2351", "K219", "M5416", "K4090", "Z1211", "D125"),
    "screen_mammo": ("Z1231",),
    "lab": ("Z0000", "E785", "R7303", "D649", "E039", "Z113", "Z114", "R799"),
    "therapy": ("M545", "M25561", "M6281", "S83511A", "M75101", "R262"),
    "rehab": ("Z5189", "M6281", "I69351"),
    "renal": ("N186",),
    "oncology": ("C50911", "C3490", "C189", "C61", "Z5111"),
    "dme": ("G4733", "J9611", "M1711", "Z993"),
    "ambulance": ("R079", "R55", "S0990XA", "R4182", "I469"),
    "elderly": ("Z0000", "R531", "M159", "R296", "I10", "E785", "N400", "Z7901"),
    "hospice": ("C3490", "G309", "I5022", "J449", "C259"),
    "pregnancy": ("Z3480", "Z3490", "O99891"),
    "secondary": ("Z7984", "Z87891", "E669", "Z6830", "R739", "Z9181", "Z7982", "Z8249",
                  "Z7901", "Z90049", "M797", "K5900", "Z8673"),
}

#: MS-DRGs used for stays (checked against the shipped code list).
_DRG_MEDICAL = ("871", "872", "291", "292", "190", "194", "193", "392", "603", "683", "690",
                "313", "065", "064", "378", "638", "637", "812", "948", "917", "202", "309",
                "282")
_DRG_SURGICAL = ("470", "460", "743", "621", "483", "330", "322", "254", "419", "352")
_DRG_ELECTIVE = frozenset({"470", "460", "743", "621", "483", "322", "352"})
_DRG_VAGINAL = ("807", "806", "805", "798", "796", "768")
_DRG_CESAREAN = ("788", "787", "786", "785", "784", "783")
_DRG_ANTEPARTUM = ("832", "833", "817")
_DRG_NEWBORN = ("795",)
_DRG_NICU = ("790", "791", "792", "793", "794")
_DRG_PSYCH = ("885", "881", "882", "880", "884")
_DRG_SUBSTANCE = ("897", "896", "895", "894")
_DRG_REHAB = ("945", "946")
#: Principal diagnosis by DRG.
_DRG_DX = {
    "871": "A419", "872": "A419", "291": "I5023", "292": "I5033", "190": "J441", "194": "J189",
    "193": "J189", "392": "K5290", "603": "L03115", "683": "N179", "690": "N390",
    "313": "R079", "065": "I63512", "064": "I63412", "378": "K922", "638": "E1165",
    "637": "E1110", "812": "D649", "948": "R55", "917": "T391X1A", "202": "J4541",
    "309": "I4891", "282": "I214", "470": "M1711", "460": "M4316", "743": "D259",
    "621": "E6601", "483": "M75121", "330": "C189", "322": "I2510", "254": "I70213",
    "419": "K8010", "352": "K4090", "807": "O80", "806": "O80", "805": "O80", "798": "O80",
    "796": "O80", "768": "O80", "788": "O82", "787": "O82", "786": "O82", "785": "O82",
    "784": "O82", "783": "O82", "832": "O2690", "833": "O2690", "817": "O0010",
    "795": "Z3800", "790": "P0730", "791": "P0734", "792": "P0737", "793": "P220",
    "794": "P599", "885": "F200", "881": "F332", "882": "F410", "880": "F4320", "884": "F0390",
    "897": "F1020", "896": "F1120", "895": "F1020", "894": "F1120", "945": "I69351",
    "946": "Z5189",
}
#: Surgeon's procedure by surgical DRG.
_DRG_CPT = {
    "470": "27447", "460": "22633", "743": "58571", "621": "43644", "483": "23472",
    "330": "44140", "322": "92928", "254": "35656", "419": "47562", "352": "49505",
}

# Claim lag: share of a claim's payments made 0, 1, ..., 12 months after the service month.
_LAG = np.array([0.63, 0.225, 0.075, 0.03, 0.015, 0.01, 0.006, 0.004, 0.003, 0.002, 0.002,
                 0.002, 0.001])
_LAG = _LAG / _LAG.sum()


# --------------------------------------------------------------------------------------------
# Claim templates
# --------------------------------------------------------------------------------------------

Share = Literal["copay", "coins", "none"]


def _alts(text: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """``"99213:40 99214:30 99212"`` -> codes and weights (default weight 1)."""
    codes: list[str] = []
    weights: list[float] = []
    for part in text.split():
        code, _, weight = part.partition(":")
        codes.append(code)
        weights.append(float(weight) if weight else 1.0)
    return tuple(codes), tuple(weights)


@dataclass(frozen=True)
class _Line:
    """One possible line of a claim template."""

    p: float
    hcpcs: str = ""
    revenue: str = ""
    weight: float = 1.0
    share: Share = "coins"


@dataclass(frozen=True)
class _Claim:
    """A claim template: its type, where it happens, who bills, which lines it may have."""

    claim_type: Literal["institutional", "professional"]
    provider: str
    lines: tuple[_Line, ...]
    pos: str = ""
    bill_type: str = ""
    #: Institutional: kind of the attending (rendering) NPI; professional: kind of the
    #: service facility (facility NPI).
    other: str = ""
    #: Hospital-stay professional claim: one line per day of the stay (see _lines).
    daily: bool = False


@dataclass(frozen=True)
class _Kind:
    """A kind of encounter: one or more claims on one day."""

    name: str
    claims: tuple[_Claim, ...]
    dx: str
    #: Relative frequency for members aged 0-17, 18-64 and 65+ (0: never sampled).
    freq: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: Multiplier of the frequency by the member's cost tier (<$1k, <$5k, <$20k, more).
    tier: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    #: December has about 20% more of these (elective surgery).
    elective: bool = False
    #: Days the claim covers (home health periods).
    days: int = 1


_P: Literal["professional"] = "professional"
_I: Literal["institutional"] = "institutional"

_EM_OFFICE = "99213:40 99214:28 99212:10 99203:6 99204:5 99215:5 99211:2 99202:2 99205:2"
_EM_ED = "99281:3 99282:8 99283:30 99284:35 99285:24"
_LAB = ("80053:5 85025:5 80061:4 84443:3 81001:2 87086:1 82306:2 80048:2 84153:1 87491:1 "
        "86803:1 82565:1 87880:1 87635:1 82947:1")
_SURGERY = "45378:5 45385:3 66984:4 29881:2 43239:3 64483:3 49505:2 47562:1 19120:1 52000:1"

_KINDS: tuple[_Kind, ...] = (
    _Kind("office_visit", (
        _Claim(_P, "pcp", pos="11", lines=(
            _Line(1, _EM_OFFICE, weight=1.0, share="copay"),
            _Line(0.22, "36415", weight=0.05),
            _Line(0.08, "81002 81003 87880 82947", weight=0.1),
            _Line(0.07, "90471", weight=0.2, share="none"),
            _Line(0.07, "90686:3 90715 90732 90651", weight=0.3, share="none"),
            _Line(0.05, "96372", weight=0.2),
            _Line(0.05, "J1100 J3420 J1030 J0696", weight=0.1),
            _Line(0.05, "93000", weight=0.3),
        )),
    ), dx="general", freq=(4.0, 4.0, 5.0)),
    _Kind("preventive", (
        _Claim(_P, "pcp", pos="11", lines=(
            _Line(1, "99396:3 99395:3 99397:2 99391 99392 99393 99394 99385 99386 G0439",
                  weight=1.4, share="none"),
            _Line(0.3, "90471", weight=0.2, share="none"),
            _Line(0.3, "90686 90715 90651 90750", weight=0.4, share="none"),
            _Line(0.2, "36415", weight=0.05, share="none"),
        )),
    ), dx="general", freq=(1.0, 0.45, 0.55)),
    _Kind("specialist_visit", (
        _Claim(_P, "specialist", pos="11", lines=(
            _Line(1, "99214:4 99213:3 99204:2 99215:1 99203:1 99205:1", weight=1.4,
                  share="copay"),
            _Line(0.12, "71046 73562 73030 76700 72100", weight=0.6),
            _Line(0.10, "93306", weight=2.0),
            _Line(0.08, "93000", weight=0.3),
            _Line(0.05, "88305", weight=0.8),
        )),
    ), dx="general", freq=(0.6, 1.5, 2.5), tier=(0.5, 1.0, 1.4, 1.6)),
    _Kind("telehealth", (
        _Claim(_P, "pcp", pos="02:1 10:2", lines=(
            _Line(1, "99213:4 99214:2 99212:2", weight=0.9, share="copay"),
        )),
    ), dx="general", freq=(0.5, 1.2, 0.8)),
    _Kind("emergency", (
        _Claim(_I, "hospital", bill_type="131", other="emergency", lines=(
            _Line(1, _EM_ED, "0450:9 0451 0459", weight=9.0, share="copay"),
            _Line(0.6, "80053 80048", "0300:3 0301", weight=0.6),
            _Line(0.5, "85025", "0305 0300", weight=0.4),
            _Line(0.4, "71046 73610 72100", "0320:4 0324", weight=1.4),
            _Line(0.2, "70450 74177 71250", "0350 0351 0352", weight=5.0),
            _Line(0.5, "", "0250", weight=0.6),
            _Line(0.2, "J1885 J2405 J1100", "0636", weight=0.5),
            _Line(0.3, "93005", "0730", weight=0.5),
            _Line(0.1, "", "0981", weight=1.0),
        )),
        _Claim(_P, "emergency", pos="23", other="hospital", lines=(
            _Line(1, _EM_ED, weight=2.4),
            _Line(0.3, "93010", weight=0.2),
            _Line(0.15, "71046", weight=0.2),
        )),
    ), dx="acute", freq=(0.16, 0.17, 0.26), tier=(0.3, 1.0, 1.6, 2.0)),
    _Kind("urgent_care", (
        _Claim(_P, "pcp", pos="20", other="urgent", lines=(
            _Line(1, "99213:3 99214:2 99203:2 S9083", weight=1.4, share="copay"),
            _Line(0.3, "87880 87635 87804", weight=0.2),
            _Line(0.15, "81002", weight=0.1),
            _Line(0.1, "71046 73610", weight=0.6),
        )),
    ), dx="injury", freq=(0.3, 0.25, 0.15)),
    _Kind("urgent_care_hospital", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "99213 99214", "0456", weight=1.8, share="copay"),
            _Line(0.3, "87880", "0300", weight=0.2),
        )),
    ), dx="injury", freq=(0.05, 0.05, 0.04)),
    _Kind("lab", (
        _Claim(_P, "lab", pos="81", lines=(
            _Line(1, _LAB, weight=0.25),
            _Line(0.8, _LAB, weight=0.25),
            _Line(0.6, _LAB, weight=0.25),
            _Line(0.4, _LAB, weight=0.25),
            _Line(0.25, _LAB, weight=0.25),
            _Line(0.15, _LAB, weight=0.25),
        )),
    ), dx="lab", freq=(0.7, 1.8, 2.6)),
    _Kind("lab_hospital", (
        _Claim(_I, "hospital", bill_type="141", lines=(
            _Line(1, _LAB, "0300:3 0301 0305 0306", weight=0.3),
            _Line(0.6, _LAB, "0300:3 0301 0305 0306", weight=0.3),
            _Line(0.3, _LAB, "0300 0302 0310", weight=0.3),
        )),
    ), dx="lab", freq=(0.15, 0.4, 0.6)),
    _Kind("lab_outpatient", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, _LAB, "0300:3 0301 0305", weight=0.3),
            _Line(0.5, _LAB, "0300 0306 0307", weight=0.3),
            _Line(0.2, "36415", "0300", weight=0.05),
        )),
    ), dx="lab", freq=(0.15, 0.35, 0.5)),
    _Kind("imaging_office", (
        _Claim(_P, "radiologist", pos="11", lines=(
            _Line(1, "71046:4 73562:2 73030:2 72100:2 76700:2 76856 77080:2 72148 73721 "
                     "76536 78452", weight=2.0),
            _Line(0.15, "71046 73560", weight=0.6),
        )),
    ), dx="imaging", freq=(0.1, 0.35, 0.5), tier=(0.5, 1.0, 1.4, 1.6)),
    _Kind("xray_outpatient", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "71046:3 73562 73030 72100 73610", "0320:3 0324", weight=1.5),
            _Line(0.15, "76700 76856 76536", "0402", weight=2.5),
            _Line(0.05, "78815", "0404", weight=12.0),
        )),
        _Claim(_P, "radiologist", pos="22", other="hospital", lines=(
            _Line(1, "71046 73562 72100", weight=0.3),
        )),
    ), dx="imaging", freq=(0.1, 0.25, 0.4)),
    _Kind("ct_outpatient", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "74177:3 70450:2 71250:2 74176 71260", "0350:3 0351 0352", weight=8.0),
            _Line(0.3, "Q9967", "0636 0255", weight=0.3),
        )),
        _Claim(_P, "radiologist", pos="22", other="hospital", lines=(
            _Line(1, "74177 70450 71250", weight=0.8),
        )),
    ), dx="imaging", freq=(0.03, 0.1, 0.2), tier=(0.2, 0.8, 1.6, 2.5)),
    _Kind("mri_outpatient", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "72148:3 73721:2 70553:2 72141 73221", "0610:3 0611 0612", weight=11.0),
        )),
        _Claim(_P, "radiologist", pos="22", other="hospital", lines=(
            _Line(1, "72148 73721 70553", weight=1.0),
        )),
    ), dx="imaging", freq=(0.02, 0.08, 0.1), tier=(0.2, 0.8, 1.6, 2.5)),
    _Kind("mammogram_office", (
        _Claim(_P, "radiologist", pos="11", lines=(
            _Line(1, "77067:8 77066 77065", weight=1.8, share="none"),
            _Line(0.6, "77063:8 77061 77062", weight=0.5, share="none"),
        )),
    ), dx="screen_mammo"),
    _Kind("mammogram_hospital", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "77067:8 77066 77065", "0403:3 0401", weight=2.0, share="none"),
            _Line(0.6, "77063:8 77061 77062", "0403", weight=0.6, share="none"),
        )),
    ), dx="screen_mammo"),
    _Kind("asc_surgery", (
        _Claim(_I, "asc", bill_type="831", other="surgeon", lines=(
            _Line(1, _SURGERY, "0490", weight=14.0),
            _Line(0.6, "", "0250", weight=0.5),
            _Line(0.5, "", "0370", weight=1.5),
            _Line(0.3, "", "0272", weight=0.6),
            _Line(0.3, "", "0710", weight=1.0),
        )),
        _Claim(_P, "surgeon", pos="24", other="asc", lines=(
            _Line(1, _SURGERY, weight=4.0),
            _Line(0.2, "88305", weight=0.8),
        )),
        _Claim(_P, "anesthesia", pos="24", other="asc", lines=(
            _Line(1, "00810:3 00142:2 01400 00790", weight=1.5),
        )),
    ), dx="surgery", freq=(0.02, 0.07, 0.14), tier=(0.1, 0.7, 2.0, 2.5), elective=True),
    _Kind("outpatient_surgery", (
        _Claim(_I, "hospital", bill_type="131", other="surgeon", lines=(
            _Line(1, _SURGERY, "0360:3 0361 0490", weight=16.0),
            _Line(0.6, "", "0250", weight=0.6),
            _Line(0.5, "", "0370", weight=2.0),
            _Line(0.4, "", "0710", weight=1.2),
            _Line(0.3, "80048", "0300", weight=0.3),
            _Line(0.2, "C1713", "0278", weight=3.0),
        )),
        _Claim(_P, "surgeon", pos="22", other="hospital", lines=(
            _Line(1, _SURGERY, weight=4.0),
        )),
    ), dx="surgery", freq=(0.02, 0.05, 0.1), tier=(0.1, 0.6, 2.0, 2.6), elective=True),
    _Kind("observation", (
        _Claim(_I, "hospital", bill_type="131", other="hospitalist", lines=(
            _Line(1, "G0378", "0762:3 0760", weight=7.0),
            _Line(0.7, "80053", "0300", weight=0.5),
            _Line(0.5, "", "0250", weight=0.8),
            _Line(0.3, "93306", "0480", weight=2.0),
        )),
        _Claim(_P, "hospitalist", pos="22", other="hospital", lines=(
            _Line(1, "99221 99222 99223", weight=1.6),
        )),
    ), dx="acute", freq=(0.005, 0.02, 0.06), tier=(0.0, 0.5, 1.5, 3.0)),
    _Kind("infusion", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "J9271 J1745 J2505 J0897 J9035 J1569 J9299", "0636", weight=30.0),
            _Line(1, "96413:2 96365", "0260 0335", weight=2.0),
            _Line(0.5, "", "0250 0258", weight=0.5),
            _Line(0.4, "85025", "0300", weight=0.3),
        )),
    ), dx="oncology", freq=(0.001, 0.01, 0.03), tier=(0.0, 0.1, 1.0, 4.0)),
    _Kind("clinic_outpatient", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "G0463", "0510:3 0517", weight=2.0),
            _Line(0.3, "80053", "0300", weight=0.3),
        )),
        _Claim(_P, "specialist", pos="22:3 19", other="hospital", lines=(
            _Line(1, "99213 99214 99204", weight=1.2, share="copay"),
        )),
    ), dx="general", freq=(0.1, 0.2, 0.3)),
    _Kind("pt_outpatient", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "97110", "0420 0424", weight=0.8),
            _Line(0.8, "97140", "0420", weight=0.7),
            _Line(0.5, "97530", "0430 0434", weight=0.7),
            _Line(0.25, "92507", "0440 0444", weight=0.8),
        )),
    ), dx="therapy", freq=(0.03, 0.1, 0.12)),
    _Kind("pt_office", (
        _Claim(_P, "therapist", pos="11", lines=(
            _Line(1, "97110", weight=0.6, share="copay"),
            _Line(0.9, "97140", weight=0.5),
            _Line(0.6, "97530 97112", weight=0.5),
            _Line(0.15, "97161 97162", weight=0.9),
        )),
    ), dx="therapy", freq=(0.05, 0.25, 0.3)),
    _Kind("pt_clinic", (
        _Claim(_P, "therapist", pos="49", lines=(
            _Line(1, "97110", weight=0.6),
            _Line(0.8, "97140 97530", weight=0.5),
        )),
    ), dx="therapy", freq=(0.02, 0.1, 0.1)),
    _Kind("rehab_outpatient", (
        _Claim(_P, "therapist", pos="62", lines=(
            _Line(1, "97110 97530", weight=0.7),
            _Line(0.7, "97116 97112", weight=0.6),
        )),
    ), dx="rehab", freq=(0.005, 0.02, 0.04)),
    _Kind("office_surgery", (
        _Claim(_P, "specialist", pos="11", lines=(
            _Line(1, "11102:2 17110:2 20610:3 10060 69210:2 12001 17000:2 11721", weight=1.3),
            _Line(0.3, "88305", weight=0.8),
        )),
    ), dx="general", freq=(0.05, 0.15, 0.3)),
    _Kind("office_other", (
        _Claim(_P, "pcp", pos="11", lines=(
            _Line(1, "96372:2 G0442 99401 G0444 90471", weight=0.4),
            _Line(0.5, "J1100 J3420 J0696 90686", weight=0.2),
        )),
    ), dx="general", freq=(0.3, 0.2, 0.3)),
    _Kind("cardiology", (
        _Claim(_P, "specialist", pos="11", lines=(
            _Line(1, "99214:3 99213 99204", weight=1.3, share="copay"),
            _Line(0.4, "93306", weight=2.2),
            _Line(0.4, "93000", weight=0.3),
            _Line(0.1, "93224", weight=1.0),
        )),
    ), dx="acute", freq=(0.01, 0.15, 0.5), tier=(0.3, 1.0, 1.5, 1.8)),
    _Kind("ambulance", (
        _Claim(_P, "ambulance", pos="41", lines=(
            _Line(1, "A0427:2 A0429:3 A0433", weight=5.0),
            _Line(1, "A0425", weight=1.0),
        )),
    ), dx="ambulance", freq=(0.01, 0.02, 0.07), tier=(0.0, 0.5, 1.5, 3.0)),
    _Kind("air_ambulance", (
        _Claim(_P, "ambulance", pos="42", lines=(
            _Line(1, "A0431 A0430", weight=60.0),
            _Line(1, "A0436 A0435", weight=8.0),
        )),
    ), dx="ambulance", freq=(0.0005, 0.0008, 0.0015), tier=(0.0, 0.0, 1.0, 4.0)),
    _Kind("ambulance_hospital", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "A0429 A0427", "0540", weight=5.0),
            _Line(0.8, "A0425", "0540", weight=1.0),
        )),
    ), dx="ambulance", freq=(0.002, 0.004, 0.01), tier=(0.0, 0.5, 1.5, 3.0)),
    _Kind("dme", (
        _Claim(_P, "dme", pos="12", lines=(
            _Line(1, "E0601:3 E0114:2 E1390:2 E0260 K0001 E0470 L3908:2 E0143 L1810",
                  weight=3.0),
            _Line(0.3, "E0562 E1392 K0195 L0650", weight=1.0),
        )),
    ), dx="dme", freq=(0.01, 0.04, 0.12), tier=(0.2, 1.0, 1.5, 2.0)),
    _Kind("dme_hospital", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "E0114 L3908 E0143", "0290 0291 0274", weight=2.0),
        )),
    ), dx="dme", freq=(0.002, 0.005, 0.01)),
    _Kind("home_visit", (
        _Claim(_P, "pcp", pos="12", lines=(
            _Line(1, "99347 99348 99349 99350", weight=1.5, share="copay"),
        )),
    ), dx="elderly", freq=(0.0, 0.005, 0.05)),
    _Kind("nursing_facility_visit", (
        _Claim(_P, "pcp", pos="32:3 31", lines=(
            _Line(1, "99307 99308 99309 99310", weight=1.2),
        )),
    ), dx="elderly", freq=(0.0, 0.002, 0.08)),
    _Kind("other_place", (
        _Claim(_P, "pcp", pos="99:2 03 17 15", lines=(
            _Line(1, "99213 99212 90471", weight=0.9, share="copay"),
        )),
    ), dx="general", freq=(0.04, 0.02, 0.01)),
    _Kind("home_health", (
        _Claim(_I, "hha", bill_type="329:4 322 332 342", lines=(
            _Line(1, "", "0023", weight=12.0),
            _Line(1, "G0299", "0551", weight=2.0),
            _Line(0.8, "G0151", "0421", weight=2.0),
            _Line(0.4, "G0152", "0431", weight=1.5),
        )),
    ), dx="elderly", freq=(0.0, 0.003, 0.03), tier=(0.0, 0.2, 1.0, 3.0), days=30),
    # Condition-driven encounters (never sampled; see _FORCED).
    _Kind("diabetes_visit", (
        _Claim(_P, "pcp", pos="11", lines=(
            _Line(1, "99214:3 99213:2", weight=1.1, share="copay"),
            _Line(0.25, "82947 82962", weight=0.1),
            _Line(0.15, "2028F 2022F", weight=0.0),
        )),
    ), dx="general"),
    _Kind("hba1c_lab", (
        _Claim(_P, "lab", pos="81", lines=(
            _Line(1, "83036:19 83037", weight=0.25),
            _Line(0.7, "80053 80048", weight=0.25),
            _Line(0.5, "80061", weight=0.25),
            _Line(0.3, "82043", weight=0.2),
        )),
    ), dx="lab"),
    _Kind("psych_office", (
        _Claim(_P, "psych", pos="11", lines=(
            _Line(1, "90834:3 90837:3 90832 90791", weight=1.3, share="copay"),
        )),
    ), dx="general"),
    _Kind("psych_telehealth", (
        _Claim(_P, "psych", pos="10:3 02", lines=(
            _Line(1, "90834:3 90837:2 90832", weight=1.2, share="copay"),
        )),
    ), dx="general"),
    _Kind("psych_community", (
        _Claim(_P, "psych", pos="53", lines=(
            _Line(1, "90834 90837 90853 H0031", weight=1.1),
            _Line(0.3, "H2011 90785", weight=0.4),
        )),
    ), dx="general"),
    _Kind("psych_partial", (
        _Claim(_P, "psych", pos="52", lines=(
            _Line(1, "90853 H0035", weight=3.0),
            _Line(0.6, "90837", weight=1.0),
        )),
    ), dx="general"),
    _Kind("psych_hospital_outpatient", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "90834 90853 90791", "0900 0914:2 0915", weight=2.0),
            _Line(0.3, "90837", "0914", weight=1.0),
        )),
    ), dx="general"),
    _Kind("substance_outpatient", (
        _Claim(_P, "substance", pos="57", lines=(
            _Line(1, "H0004:3 H0005:2 H0001 99408", weight=1.0),
            _Line(0.4, "H0004 80305", weight=0.4),
        )),
    ), dx="general"),
    _Kind("opioid_treatment", (
        _Claim(_P, "substance", pos="58", lines=(
            _Line(1, "H0020", weight=0.8),
            _Line(0.8, "H0020", weight=0.8),
            _Line(0.6, "H0020", weight=0.8),
            _Line(0.4, "H0020", weight=0.8),
        )),
    ), dx="general"),
    _Kind("substance_residential", (
        _Claim(_P, "substance", pos="55", lines=(
            _Line(1, "H0018 H0019", weight=12.0),
        )),
    ), dx="general"),
    _Kind("hiv_visit", (
        _Claim(_P, "specialist", pos="11", lines=(
            _Line(1, "99214:3 99215", weight=1.4, share="copay"),
        )),
        _Claim(_P, "lab", pos="81", lines=(
            _Line(1, "87536", weight=1.0),
            _Line(0.8, "86361", weight=0.6),
            _Line(0.5, "80053", weight=0.25),
        )),
    ), dx="general"),
    _Kind("prenatal_visit", (
        _Claim(_P, "obgyn", pos="11", lines=(
            _Line(1, "99213:3 99214", weight=1.1, share="none"),
            _Line(0.3, "76805 76815 76817", weight=2.0, share="none"),
            _Line(0.3, "81002 87086 86900", weight=0.15, share="none"),
        )),
    ), dx="pregnancy"),
    _Kind("oncology_infusion", (
        _Claim(_I, "hospital", bill_type="131", lines=(
            _Line(1, "J9271 J9035 J9299 J9306 J2505", "0636", weight=40.0),
            _Line(1, "96413:3 96415", "0335 0260", weight=2.5),
            _Line(0.6, "85025", "0300", weight=0.3),
        )),
        _Claim(_P, "specialist", pos="22", other="hospital", lines=(
            _Line(1, "99214 99215", weight=1.4),
        )),
    ), dx="oncology"),
    _Kind("nephrology_visit", (
        _Claim(_P, "nephrology", pos="11", lines=(
            _Line(1, "99214 99213", weight=1.3, share="copay"),
        )),
    ), dx="general"),
)
_KIND = {k.name: i for i, k in enumerate(_KINDS)}

# Episode claim templates (stays and other expensive episodes).
_EPISODE_CLAIMS: dict[str, _Claim] = {
    "stay_facility": _Claim(_I, "hospital", bill_type="111", other="hospitalist", lines=(
        _Line(1, "", "0120:5 0110:2 0121", weight=10.0),
        _Line(0.2, "", "0200 0206", weight=8.0),
        _Line(0.9, "", "0250", weight=1.5),
        _Line(0.3, "", "0258 0636", weight=1.0),
        _Line(0.8, "", "0300 0301", weight=1.0),
        _Line(0.5, "", "0320 0350", weight=1.0),
        _Line(0.35, "", "0450", weight=1.2),
        _Line(0.4, "", "0270 0272", weight=0.8),
        _Line(0.3, "", "0410 0730", weight=0.5),
    )),
    "surgical_facility": _Claim(_I, "hospital", bill_type="111", other="surgeon", lines=(
        _Line(1, "", "0120:5 0110:2 0121", weight=8.0),
        _Line(1, "", "0360", weight=9.0),
        _Line(0.9, "", "0370", weight=2.0),
        _Line(0.9, "", "0250", weight=1.5),
        _Line(0.6, "", "0278", weight=4.0),
        _Line(0.7, "", "0300", weight=0.8),
        _Line(0.5, "", "0710", weight=1.0),
        _Line(0.4, "", "0420", weight=0.8),
    )),
    "delivery_facility": _Claim(_I, "hospital", bill_type="111", other="obgyn", lines=(
        _Line(1, "", "0112:2 0122", weight=6.0),
        _Line(1, "", "0720 0722", weight=5.0),
        _Line(0.8, "", "0250", weight=0.8),
        _Line(0.6, "", "0300", weight=0.5),
        _Line(0.4, "", "0370", weight=1.0),
    )),
    "newborn_facility": _Claim(_I, "hospital", bill_type="111", other="pcp", lines=(
        _Line(1, "", "0170 0171", weight=4.0),
        _Line(0.6, "", "0300", weight=0.4),
        _Line(0.4, "", "0250", weight=0.2),
    )),
    "nicu_facility": _Claim(_I, "hospital", bill_type="111", other="pcp", lines=(
        _Line(1, "", "0174 0173", weight=20.0),
        _Line(0.9, "", "0250", weight=2.0),
        _Line(0.9, "", "0300", weight=1.5),
        _Line(0.5, "", "0320", weight=0.8),
        _Line(0.5, "", "0410", weight=1.0),
    )),
    "psych_facility": _Claim(_I, "psych_hospital", bill_type="111", other="psych", lines=(
        _Line(1, "", "0114 0124", weight=10.0),
        _Line(0.7, "", "0250", weight=0.8),
        _Line(0.5, "", "0300", weight=0.4),
        _Line(0.5, "", "0900 0914", weight=1.0),
    )),
    "substance_facility": _Claim(_I, "hospital", bill_type="111", other="substance", lines=(
        _Line(1, "", "0116 0126", weight=10.0),
        _Line(0.7, "", "0250", weight=0.8),
        _Line(0.6, "", "0300", weight=0.6),
        _Line(0.4, "", "0944 0945", weight=1.0),
    )),
    "rehab_facility": _Claim(_I, "rehab_hospital", bill_type="111", other="therapist", lines=(
        _Line(1, "", "0118 0128", weight=10.0),
        _Line(0.9, "", "0420 0424", weight=2.0),
        _Line(0.8, "", "0430 0434", weight=1.5),
        _Line(0.5, "", "0250", weight=0.6),
        _Line(0.3, "", "0440", weight=0.8),
    )),
    "stay_hospitalist": _Claim(_P, "hospitalist", pos="21", other="hospital", daily=True,
                               lines=()),
    "psych_attending": _Claim(_P, "psych", pos="51", other="psych_hospital", daily=True,
                              lines=()),
    "rehab_attending": _Claim(_P, "therapist", pos="61", other="rehab_hospital", daily=True,
                              lines=()),
    "surgeon_inpatient": _Claim(_P, "surgeon", pos="21", other="hospital", lines=(
        _Line(1, "", weight=6.0),  # the DRG's procedure, filled in by _episode_claims
        _Line(0.6, "01402 00790 00670 01480", weight=1.5),
    )),
    "obstetric_delivery": _Claim(_P, "obgyn", pos="21", other="hospital", lines=(
        _Line(1, "59400:2 59409 59510 59514", weight=5.0),
        _Line(0.5, "01967", weight=1.5),
    )),
    "newborn_care": _Claim(_P, "pcp", pos="21", other="hospital", lines=(
        _Line(1, "99460 99462 99238", weight=1.0),
        _Line(0.4, "99462", weight=0.6),
    )),
    "snf_facility": _Claim(_I, "snf", bill_type="211:4 212", lines=(
        _Line(1, "", "0120:2 0191 0022", weight=10.0),
        _Line(0.7, "", "0250", weight=1.0),
        _Line(0.8, "97110", "0420", weight=2.0),
        _Line(0.6, "97535", "0430", weight=1.5),
        _Line(0.3, "", "0300", weight=0.5),
    )),
    "snf_visit": _Claim(_P, "pcp", pos="31", other="snf", lines=(
        _Line(1, "99304 99305 99306", weight=0.4),
        _Line(0.6, "99308 99309", weight=0.3),
    )),
    "home_health_episode": _Claim(_I, "hha", bill_type="329:4 322", lines=(
        _Line(1, "", "0023", weight=6.0),
        _Line(1, "G0299", "0551", weight=2.0),
        _Line(0.8, "G0151", "0421", weight=2.0),
        _Line(0.4, "G0152", "0431", weight=1.5),
    )),
    "hospice_home": _Claim(_I, "hospice", bill_type="811:3 812 813", lines=(
        _Line(1, "Q5001", "0651", weight=10.0),
        _Line(0.5, "Q5001", "0657", weight=1.0),
    )),
    "hospice_inpatient": _Claim(_I, "hospice", bill_type="821:3 822", lines=(
        _Line(1, "Q5006", "0656 0655", weight=10.0),
        _Line(0.3, "", "0657", weight=1.0),
    )),
    "dialysis_facility": _Claim(_I, "dialysis", bill_type="721:4 722", other="nephrology",
                                lines=(
        _Line(1, "90999", "0821", weight=4.0),
        _Line(1, "90999", "0821", weight=4.0),
        _Line(1, "90999", "0821", weight=4.0),
        _Line(0.8, "J0887 Q5106", "0634 0635", weight=2.0),
        _Line(0.6, "82310", "0300", weight=0.3),
    )),
    "dialysis_monthly": _Claim(_P, "nephrology", pos="65", other="dialysis", lines=(
        _Line(1, "90960 90961 90962", weight=2.0),
    )),
}

#: Every claim template, kinds' claims first, then the episodes'.
_TEMPLATES: tuple[_Claim, ...] = (
    *(c for k in _KINDS for c in k.claims), *_EPISODE_CLAIMS.values()
)
_KIND_FIRST_TEMPLATE = np.cumsum([0] + [len(k.claims) for k in _KINDS])
#: Template indices of each kind's claims.
_KIND_TEMPLATES: tuple[tuple[int, ...], ...] = tuple(
    tuple(range(int(_KIND_FIRST_TEMPLATE[i]), int(_KIND_FIRST_TEMPLATE[i + 1])))
    for i in range(len(_KINDS))
)
_EPISODE_TEMPLATE = {
    name: int(_KIND_FIRST_TEMPLATE[-1]) + i for i, name in enumerate(_EPISODE_CLAIMS)
}

_SAMPLED = np.array([i for i, k in enumerate(_KINDS) if sum(k.freq) > 0], dtype=np.int64)
_ELECTIVE = np.array([k.elective for k in _KINDS])
_KIND_DAYS = np.array([k.days for k in _KINDS], dtype=np.int64)


def _expected_lines(claim: _Claim) -> float:
    return sum(line.p for line in claim.lines)


_KIND_LINES = np.array(
    [sum(_expected_lines(c) for c in k.claims) for k in _KINDS], dtype=np.float64
)


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
    drgs = (*_DRG_MEDICAL, *_DRG_SURGICAL, *_DRG_VAGINAL, *_DRG_CESAREAN, *_DRG_ANTEPARTUM,
            *_DRG_NEWBORN, *_DRG_NICU, *_DRG_PSYCH, *_DRG_SUBSTANCE, *_DRG_REHAB)
    return _Vocab(
        hcpcs=tuple(sorted(hcpcs)), revenue=tuple(sorted(revenue)), pos=tuple(sorted(pos)),
        bill_type=tuple(sorted(bills)), dx=tuple(sorted(dx)), drg=tuple(sorted(set(drgs))),
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
        return np.asarray(self.values[np.searchsorted(self.keys, u, side="right")],
                          dtype=np.int64)


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
_TEMPLATE_OTHER = np.array([_PK[t.other] if t.other else -1 for t in _TEMPLATES],
                           dtype=np.int64)


def _check_reference_codes() -> None:
    """The DRGs used must be current codes of the shipped MS-DRG list."""
    known = drg_types()
    missing = [d for d in _VOCAB.drg if known.get(d) not in ("M", "P")]
    if missing:
        raise ConfigError(f"MS-DRG codes not in the shipped list: {missing}")


# --------------------------------------------------------------------------------------------
# Small numpy helpers
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Arrow columns
# --------------------------------------------------------------------------------------------

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.CODE: pa.string(),
    ColumnType.DATE: pa.date32(),
    ColumnType.MONEY: pa.decimal128(18, 2),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.INT: pa.int64(),
    ColumnType.NUMBER: pa.float64(),
}


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow (and Parquet) schema of a schema table: every column, in order."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type]) for c in table.columns])


def _validity(null: BoolArray | None) -> pa.Buffer | None:
    if null is None or not null.any():
        return None
    return pa.array(~null).buffers()[1]


def _money(cents: IntArray, null: BoolArray | None = None) -> pa.Array:
    """decimal128(18, 2) from integer cents, exactly."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    np.right_shift(cents, 63, out=words[:, 1])
    return pa.Array.from_buffers(
        pa.decimal128(18, 2), len(cents), [_validity(null), pa.py_buffer(words)]
    )


def _dates(days: IntArray, null: BoolArray | None = None) -> pa.Array:
    return pa.array(days.astype(np.int32), type=pa.date32(), mask=null)


@cache
def _vocab_array(vocab: tuple[str, ...]) -> pa.Array:
    return pa.array(list(vocab), type=pa.string())


def _encoded(values: pa.Array, index: IntArray) -> pa.Array:
    """Dictionary-encoded strings (index -1: null). Parquet stores them as plain strings;
    :func:`_plain` decodes them for frames."""
    null = index < 0
    indices = pa.array(np.where(null, 0, index).astype(np.int32),
                       mask=null if null.any() else None)
    return pa.DictionaryArray.from_arrays(indices, values)


def _codes(vocab: Sequence[str], index: IntArray) -> pa.Array:
    return _encoded(_vocab_array(tuple(vocab)), index)


def _used(values: pa.Array, index: IntArray) -> pa.Array:
    """Like :func:`_encoded`, with only the values used in the dictionary (keeps Parquet's
    dictionary pages small for large vocabularies such as NPIs)."""
    used = _used_indices(index, len(values))
    remap = np.full(len(values) + 1, -1, dtype=np.int64)  # the last entry maps -1 to -1
    remap[used] = np.arange(len(used))
    return _encoded(values.take(pa.array(used)), remap[index])


def _used_indices(index: IntArray, n: int) -> IntArray:
    """The distinct non-negative values of ``index`` (all below ``n``), sorted."""
    seen = np.bincount(index[index >= 0], minlength=n)
    return np.flatnonzero(seen).astype(np.int64)


def _ids(prefix: str, numbers: IntArray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _table(schema_table: Table, columns: Mapping[str, pa.Array]) -> pa.Table:
    """A table in the schema's column order; code columns may still be dictionary-encoded."""
    names = [c.name for c in schema_table.columns]
    return pa.Table.from_arrays([columns[name] for name in names], names=names)


def _plain(table: pa.Table, schema_table: Table) -> pa.Table:
    return table.cast(arrow_schema(schema_table))


# --------------------------------------------------------------------------------------------
# The national provider and drug universe (shared by every carrier of a seed)
# --------------------------------------------------------------------------------------------


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
            rows.append((c, False, specialty, bcost * (0.5 + i / max(n_brand - 1, 1)),
                         1.0 if not specialty else 0.1))
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
        npi=_ids("", npi, 10), kind=kind, state=state, taxonomy=taxonomy, start=start,
        count=counts, ndc=_ids("", ndc_numbers, 11), ndc_class=ndc_class,
        ndc_generic=generic, ndc_specialty=special,
        ndc_cost30=np.array([r[3] for r in rows]) * 100.0,
        ndc_units=np.array([r[4] for r in rows]),
        ndc_start=ndc_start, ndc_count=ndc_count,
    )


# --------------------------------------------------------------------------------------------
# Carriers
# --------------------------------------------------------------------------------------------


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
        plans.append(_Plan(
            code=code, hdhp=hdhp, weight=float(rng.uniform(0.3, 1.0)) * (0.15 if hdhp else 1.0),
            deductible=170_000 if hdhp else int(rng.choice([0, 35_000, 50_000, 75_000])),
            coinsurance=float(rng.choice([0.1, 0.15, 0.2])),
            copay=int(rng.choice([2_000, 2_500, 3_000])),
            er_copay=int(rng.choice([10_000, 15_000, 25_000])),
            oop_max=int(rng.choice([500_000, 650_000, 800_000])),
        ))
    national = members >= 0.3 * config.members or rng.random() < 0.3
    home = rng.choice(len(_STATE_CODES), size=int(rng.integers(1, 4)), replace=False,
                      p=_STATE_WEIGHTS)
    oon_rate = np.where(
        np.array([e == "2" for _n, e, _t, _c in _PROVIDER_KINDS])[universe.kind],
        _OON_ORG, _OON_PERSON,
    )
    in_network = rng.random(len(universe.kind)) >= oon_rate
    window_end = _day(config.year + config.months // 12, config.months % 12 + 1, 1) - 1
    return _Carrier(
        carrier_id=carrier_id, config=config, plans=tuple(plans),
        pshb_share=float(np.clip(rng.normal(0.15, 0.04), 0.02, 0.4)),
        home_states=home.astype(np.int64), national=bool(national),
        cost_factor=float(np.exp(rng.normal(0.0, 0.06))), in_network=in_network,
        universe=universe, window_start=_day(config.year, 1, 1), window_end=window_end,
    )


# --------------------------------------------------------------------------------------------
# Members and enrollment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Members:
    number: IntArray  # member number within the carrier (1-based)
    subscriber: IntArray  # member number of the family's subscriber
    relationship: IntArray
    enrollee_type: IntArray
    coverage_tier: IntArray
    sex: IntArray
    birth: IntArray
    age: FloatArray  # years, on the first day of the window (negative: born later)
    state: IntArray  # -1: unknown
    program: IntArray
    plan: IntArray
    plan2: IntArray  # plan after a mid-year switch, -1 when none
    switch: IntArray  # first day of the second span, -1 when none
    span_start: IntArray
    span_end: IntArray  # -1: open
    death: IntArray  # -1: alive
    first: IntArray  # first enrolled day in the window
    last: IntArray  # last enrolled day in the window
    member_months: IntArray
    medicare: BoolArray
    preference: FloatArray  # where in a provider list the member's usual providers sit
    condition: IntArray  # (members, conditions): diagnosis code index, -1 when absent
    latent: FloatArray  # annual allowed at full enrollment, dollars
    specialty: BoolArray
    dialysis: BoolArray
    delivery: IntArray  # day of a delivery in the window, -1 when none

    @property
    def n(self) -> int:
        return len(self.number)


def _annual_death_rate(age: FloatArray) -> FloatArray:
    return np.select(
        [age < 1, age < 45, age < 65, age < 75, age < 85],
        [0.004, 0.001, 0.005, 0.015, 0.04], default=0.11,
    )


def _members(car: _Carrier, first_number: int, n: int, rng: Rng) -> _Members:
    ws, we = car.window_start, car.window_end
    window_days = we - ws + 1
    sizes = rng.choice(np.arange(1, 7), size=n, p=[0.42, 0.27, 0.12, 0.12, 0.05, 0.02])
    family, position = _expand(sizes.astype(np.int64))
    family, position = family[:n], position[:n]
    n_fam = int(family[-1]) + 1
    fam_size = np.bincount(family, minlength=n_fam)
    head = np.flatnonzero(position == 0)
    number = np.arange(first_number, first_number + n, dtype=np.int64)

    # Family attributes.
    etype_f = rng.choice(3, size=n_fam, p=[0.62, 0.33, 0.05])
    age_f = np.select(
        [etype_f == 0, etype_f == 1],
        [np.clip(rng.normal(45, 11, n_fam), 20, 70), np.clip(rng.normal(72, 8, n_fam), 50, 99)],
        default=np.clip(rng.normal(76, 10, n_fam), 25, 99),
    )
    spouse_f = rng.random(n_fam) < np.where(etype_f == 2, 0.0, 0.8)
    sex_f = (rng.random(n_fam) < 0.5).astype(np.int64)  # 0 F, 1 M
    if car.national:
        state_f = rng.choice(len(_STATE_CODES), size=n_fam, p=_STATE_WEIGHTS)
    else:
        home = car.home_states[rng.integers(0, len(car.home_states), size=n_fam)]
        anywhere = rng.choice(len(_STATE_CODES), size=n_fam, p=_STATE_WEIGHTS)
        state_f = np.where(rng.random(n_fam) < 0.85, home, anywhere)
    program_f = (rng.random(n_fam) < car.pshb_share).astype(np.int64)
    plan_w = np.array([p.weight for p in car.plans])
    plan_f = rng.choice(len(car.plans), size=n_fam, p=plan_w / plan_w.sum())

    # Family enrollment: before the year, from 1 January, or joined mid-year; some terms.
    start_kind = rng.choice(3, size=n_fam, p=[0.30, 0.60, 0.10])
    before = ws - rng.integers(30, 365 * 15, size=n_fam)
    before = np.where(rng.random(n_fam) < 0.8, _month_start(_month_of(before)), before)
    joined = ws + 1 + np.floor(rng.random(n_fam) * max(window_days - 16, 1)).astype(np.int64)
    start_f = np.select([start_kind == 0, start_kind == 1], [before, np.full(n_fam, ws)], joined)
    first_f = np.maximum(start_f, ws)
    termed = (rng.random(n_fam) < 0.07) & (we - first_f > 20)
    end_f = _uniform_days(rng, first_f + 10, np.full(n_fam, we))
    month_end = _month_start(_month_of(end_f) + 1) - 1
    end_f = np.where(rng.random(n_fam) < 0.5, np.minimum(month_end, we), end_f)
    end_f = np.where(termed, end_f, -1)
    last_f = np.where(end_f >= 0, end_f, we)
    switching = (
        (len(car.plans) > 1) & (rng.random(n_fam) < 0.035) & (last_f - first_f > 60)
    )
    switch_f = np.where(switching, _uniform_days(rng, first_f + 21, last_f - 21), -1)
    if len(car.plans) > 1:
        plan2_f = (plan_f + 1 + rng.integers(0, len(car.plans) - 1, size=n_fam)) % len(
            car.plans)
    else:
        plan2_f = np.full(n_fam, -1, dtype=np.int64)
    plan2_f = np.where(switching, plan2_f, -1)

    # Members.
    relationship = np.where(position == 0, 0, np.where((position == 1) & spouse_f[family], 1, 2))
    age = age_f[family].copy()
    is_spouse, is_child = relationship == 1, relationship == 2
    age[is_spouse] = np.maximum(age[is_spouse] + rng.normal(-2, 4, int(is_spouse.sum())), 18)
    child_max = np.clip(age_f[family] - 18, 1, 25.9)
    age[is_child] = rng.random(int(is_child.sum())) * child_max[is_child]
    # Some children are born in the window, while their family is enrolled.
    newborn = is_child & (rng.random(n) < 0.025) & (last_f[family] - first_f[family] > 30)
    birth = ws - np.floor(age * 365.25).astype(np.int64)
    birth = np.where(newborn, _uniform_days(rng, first_f[family] + 1, last_f[family] - 10), birth)
    age = np.where(newborn, (ws - birth) / 365.25, age)
    sex = np.where(relationship == 0, sex_f[family], (rng.random(n) < 0.5).astype(np.int64))
    sex = np.where(is_spouse & (rng.random(n) < 0.95), 1 - sex_f[family], sex)
    sex = np.where(rng.random(n) < 0.002, 2, sex)
    state = np.where(rng.random(n) < 0.003, -1, state_f[family])

    span_start = start_f[family].copy()
    span_start = np.where(birth > span_start, birth, span_start)
    span_end = end_f[family].copy()
    # Children leave at the end of the month they turn 26.
    turns_26 = birth + np.round(26 * 365.25).astype(np.int64)
    age_out = _month_start(_month_of(turns_26) + 1) - 1
    leaves = (
        is_child & (turns_26 >= ws) & (age_out <= we)
        & ((span_end < 0) | (age_out < span_end)) & (age_out >= np.maximum(span_start, ws))
    )
    span_end = np.where(leaves, age_out, span_end)
    first = np.maximum(span_start, ws)
    last = np.where(span_end >= 0, np.minimum(span_end, we), we)
    # Deaths end enrollment.
    dies = rng.random(n) < _annual_death_rate(age) * window_days / 365.25
    death = np.where(dies, _uniform_days(rng, first, last), -1)
    span_end = np.where(dies, death, span_end)
    last = np.where(dies, death, last)
    # A plan switch applies to the members enrolled on both sides of it.
    switch = switch_f[family]
    plan = plan_f[family].copy()
    plan2 = plan2_f[family].copy()
    switch_before = (switch >= 0) & (switch <= first)
    plan = np.where(switch_before, plan2, plan)
    no_switch = (switch < 0) | switch_before | (switch > last)
    switch = np.where(no_switch, -1, switch)
    plan2 = np.where(no_switch, -1, plan2)
    member_months = _month_of(last) - _month_of(first) + 1

    etype = etype_f[family]
    age_now = np.maximum(age, 0)
    medicare = np.where(
        age_now >= 65, rng.random(n) < np.where(etype == 0, 0.05, 0.88), rng.random(n) < 0.01
    )
    tier = np.minimum(fam_size[family], 3) - 1

    condition, latent, specialty, dialysis, delivery = _health(
        car, age_now, sex, first, last, member_months, dies, rng
    )
    return _Members(
        number=number, subscriber=number[head][family], relationship=relationship,
        enrollee_type=etype, coverage_tier=tier, sex=sex, birth=birth, age=age, state=state,
        program=program_f[family], plan=plan, plan2=plan2, switch=switch,
        span_start=span_start, span_end=span_end, death=death, first=first, last=last,
        member_months=member_months, medicare=medicare, preference=rng.random(n),
        condition=condition, latent=latent, specialty=specialty, dialysis=dialysis,
        delivery=delivery,
    )


def _health(
    car: _Carrier, age: FloatArray, sex: IntArray, first: IntArray, last: IntArray,
    member_months: IntArray, dies: BoolArray, rng: Rng,
) -> tuple[IntArray, FloatArray, BoolArray, BoolArray, IntArray]:
    """Conditions and the latent annual cost of each member."""
    n = len(age)
    band = np.digitize(age, [18, 45, 65])  # 0-17, 18-44, 45-64, 65+

    def prevalence(*by_band: float) -> BoolArray:
        return rng.random(n) < np.array(by_band)[band]

    has = np.zeros((n, len(_CONDITIONS)), dtype=np.bool_)
    has[:, _C["diabetes"]] = prevalence(0.003, 0.04, 0.12, 0.2)
    has[:, _C["hypertension"]] = prevalence(0.003, 0.1, 0.33, 0.6)
    has[:, _C["hyperlipidemia"]] = prevalence(0.002, 0.06, 0.25, 0.45)
    has[:, _C["mental"]] = prevalence(0.07, 0.15, 0.13, 0.09)
    has[:, _C["substance"]] = prevalence(0.004, 0.04, 0.03, 0.015)
    has[:, _C["hiv"]] = prevalence(0.0, 0.004, 0.004, 0.002)
    has[:, _C["ckd"]] = prevalence(0.0, 0.003, 0.02, 0.05)
    has[:, _C["copd"]] = prevalence(0.0, 0.003, 0.03, 0.08)
    has[:, _C["chf"]] = prevalence(0.0, 0.001, 0.01, 0.05)
    has[:, _C["cancer"]] = prevalence(0.001, 0.004, 0.015, 0.03)
    women = (sex == 0) & (age >= 18) & (age < 45) & (last - first > 90)
    has[:, _C["pregnancy"]] = women & (rng.random(n) < 0.05)
    dialysis = has[:, _C["ckd"]] & (rng.random(n) < 0.1)

    # Latent annual allowed: zero, a lognormal body, a band of complex members, a heavy tail.
    body = np.array([0.6, 0.8, 1.25, 1.7])[band] * _lognormal(rng, 1.0, n)
    factors = np.array([1.9, 1.25, 1.2, 1.4, 1.4, 2.0, 1.8, 1.6, 2.2, 2.5, 1.0])
    body *= np.prod(np.where(has, factors, 1.0), axis=1)
    latent = body * _BODY_MEAN
    u = rng.random(n)
    complex_band = u < _COMPLEX_SHARE * np.array([0.4, 0.7, 1.3, 1.8])[band]
    latent = np.where(complex_band, _COMPLEX_MEDIAN * _lognormal(rng, 0.45, n) * 1.1, latent)
    tail = rng.random(n) < _TAIL_SHARE * np.array([0.5, 0.8, 1.2, 1.5])[band]
    latent = np.where(tail, np.minimum(100_000 * rng.random(n) ** (-1 / 1.3), 3e6), latent)
    zero_p = np.array([0.2, 0.19, 0.12, 0.06])[band]
    must_use = (
        has[:, _C["diabetes"]] | has[:, _C["hiv"]] | has[:, _C["cancer"]]
        | has[:, _C["pregnancy"]] | dialysis | dies
    )
    zero = (rng.random(n) < zero_p) & ~must_use
    latent = np.where(zero, 0.0, latent * car.cost_factor * _COST_SCALE)
    has[zero] = False

    annual = latent
    specialty = (
        ((annual >= 25_000) & (rng.random(n) < 0.45)) | has[:, _C["hiv"]]
        | (has[:, _C["cancer"]] & (rng.random(n) < 0.4))
    ) & ~zero
    latent = np.where(specialty, np.maximum(latent, 30_000 * (1 + rng.random(n))), latent)
    latent = np.where(dialysis, np.maximum(latent, 90_000 * (1 + 0.5 * rng.random(n))), latent)
    latent = np.where(dies & (age >= 45), np.maximum(latent, 25_000 * (1 + rng.random(n))),
                      latent)
    delivery = np.where(
        has[:, _C["pregnancy"]], _uniform_days(rng, first + 30, last), -1
    )

    condition = np.full((n, len(_CONDITIONS)), -1, dtype=np.int64)
    for c, choices in enumerate(_CONDITION_CHOICES):
        rows = np.flatnonzero(has[:, c])
        condition[rows, c] = choices.draw(rng, len(rows))
    type1 = has[:, _C["diabetes"]] & ((age < 30) | (rng.random(n) < 0.07))
    rows = np.flatnonzero(type1)
    condition[rows, _C["diabetes"]] = _Choices.of(" ".join(_TYPE1_DIABETES), _DX).draw(
        rng, len(rows))
    dialysis_rows = np.flatnonzero(dialysis)
    condition[dialysis_rows, _C["ckd"]] = _DX["N186"]
    return condition, latent, specialty, dialysis, delivery


#: Calibration of the latent cost (see calibration_report and the tests).
_BODY_MEAN = 2600.0
_COMPLEX_SHARE = 0.036
_COMPLEX_MEDIAN = 32_000.0
_TAIL_SHARE = 0.0014
_COST_SCALE = 0.98


# --------------------------------------------------------------------------------------------
# Pharmacy
# --------------------------------------------------------------------------------------------

#: Fills per member per year the generator aims at.
_FILLS_PER_YEAR = 16.0
#: Medical claim lines per member per year the generator aims at.
_LINES_PER_YEAR = 51.0


@dataclass(frozen=True)
class _Fills:
    member: IntArray
    day: IntArray
    ndc: IntArray
    days_supply: IntArray
    channel: IntArray
    quantity: FloatArray
    allowed: IntArray  # cents


def _pick_ndc(u: _Universe, drug_class: IntArray, generic: BoolArray, specialty: BoolArray,
              rng: Rng) -> IntArray:
    key = drug_class * 4 + (~generic).astype(np.int64) * 2 + specialty.astype(np.int64)
    count = u.ndc_count[key]
    if (count == 0).any():
        raise AssertionError("a drug pool is empty")
    # Skewed towards the first (most used) products of a pool.
    offset = np.floor(count * rng.random(len(key)) ** 1.6)
    return np.asarray(u.ndc_start[key] + offset, dtype=np.int64)


def _prescriptions(
    m: _Members, member: IntArray, ongoing: float, rng: Rng,
    days_supply: IntArray | None = None,
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Refill series: (member, fill day, days supply, prescription) of each fill of each
    prescription (numbered from 0 in the order given)."""
    k = len(member)
    if days_supply is None:
        days_supply = np.where(rng.random(k) < 0.28, 90, 30)
    first, last = m.first[member], m.last[member]
    ongoing_start = first + np.floor(rng.random(k) * days_supply).astype(np.int64)
    new_start = _uniform_days(rng, first, last)
    start = np.where(rng.random(k) < ongoing, ongoing_start, new_start)
    interval = np.round(days_supply * rng.uniform(1.0, 1.25, k)).astype(np.int64)
    fills = np.where(start <= last, (last - start) // interval + 1, 0)
    stops = rng.random(k) < 0.15
    fills = np.where(stops, np.minimum(fills, 1 + rng.geometric(0.3, k)), fills)
    owner, within = _expand(fills.astype(np.int64))
    day = start[owner] + within * interval[owner]
    return member[owner], day, days_supply[owner], owner


def _expected_fills(m: _Members, rows: IntArray) -> FloatArray:
    days = (m.last[rows] - m.first[rows] + 1).astype(np.float64)
    # Refill series start late or stop early now and then (see _prescriptions).
    return 0.8 * (0.72 * (days / (30 * 1.125) + 0.5) + 0.28 * (days / (90 * 1.125) + 0.5))


def _pharmacy(car: _Carrier, m: _Members, rng: Rng) -> _Fills:
    u = car.universe
    users = m.latent > 0
    age = np.maximum(m.age, 0)
    has = m.condition >= 0
    parts: list[tuple[IntArray, IntArray, IntArray, IntArray]] = []
    script_class: list[IntArray] = []
    script_specialty: list[BoolArray] = []

    def add(fills: tuple[IntArray, IntArray, IntArray, IntArray], n_scripts: int,
            drug_class: IntArray | int, specialty: bool = False) -> None:
        member, day, supply, script = fills
        offset = sum(len(c) for c in script_class)
        parts.append((member, day, supply, script + offset))
        script_class.append(np.broadcast_to(np.asarray(drug_class, dtype=np.int64),
                                            (n_scripts,)).copy())
        script_specialty.append(np.full(n_scripts, specialty))

    def chronic(mask: BoolArray, drug_class: str, extra: float = 0.0) -> None:
        rows = np.flatnonzero(mask & users)
        rows = np.concatenate([rows, rows[rng.random(len(rows)) < extra]])
        add(_prescriptions(m, rows, 0.85, rng), len(rows), _DRUG[drug_class])

    diabetic = has[:, _C["diabetes"]]
    chronic(diabetic, "antidiabetic", extra=0.45)
    statin_p = np.where(diabetic, np.where((age >= 40) & (age <= 75), 0.8, 0.4), 0.0)
    statin_p = np.where(has[:, _C["hyperlipidemia"]] & ~diabetic, 0.7, statin_p)
    chronic(rng.random(m.n) < statin_p, "statin")
    chronic(has[:, _C["hypertension"]], "antihypertensive", extra=0.35)
    chronic(has[:, _C["mental"]] & (rng.random(m.n) < 0.7), "antidepressant")
    chronic((age >= 18) & (rng.random(m.n) < 0.02), "opioid analgesic")

    # Monthly specialty fills: biologics, or other specialty drugs (HIV, oral oncology).
    spec = np.flatnonzero(m.specialty)
    biologic = rng.random(len(spec)) < np.where(m.condition[spec, _C["hiv"]] >= 0, 0.0, 0.8)
    add(_prescriptions(m, spec, 1.0, rng, np.full(len(spec), 30)), len(spec),
        np.where(biologic, _DRUG["specialty biologic"], _DRUG["other"]), True)

    # Acute fills, one fill each.
    exposure = m.member_months / 12.0
    acute_rate = np.array([1.6, 1.4, 1.7, 2.2])[np.digitize(age, [18, 45, 65])]
    n_acute = np.where(users, rng.poisson(acute_rate * exposure), 0)
    a_member, _w = _expand(n_acute.astype(np.int64))
    k = len(a_member)
    add((a_member, _uniform_days(rng, m.first[a_member], m.last[a_member]),
         np.where(rng.random(k) < 0.05, 90, 30), np.arange(k, dtype=np.int64)), k,
        rng.choice(np.array([_DRUG["antibiotic"], _DRUG["opioid analgesic"], _DRUG["other"]]),
                   size=k, p=[0.6, 0.1, 0.3]))

    # Other chronic prescriptions, as many as needed to reach the fills target on average.
    so_far = sum(len(p[0]) for p in parts)
    target = _FILLS_PER_YEAR * float(exposure.sum())
    rate = np.where(users, np.array([0.2, 0.5, 1.0, 1.5])[np.digitize(age, [18, 45, 65])], 0.0)
    expected = float((rate * _expected_fills(m, np.arange(m.n))).sum())
    scale = max(target - so_far, 0.0) / expected if expected > 0 else 0.0
    o_rows, _w = _expand(rng.poisson(rate * scale).astype(np.int64))
    add(_prescriptions(m, o_rows, 0.85, rng), len(o_rows), _DRUG["other"])

    member, day, supply, script = (np.concatenate([p[i] for p in parts]) for i in range(4))
    keep = day <= m.last[member]
    member, day, supply, script = member[keep], day[keep], supply[keep], script[keep]

    # Each prescription is one product, dose and channel.
    drug_class = np.concatenate(script_class)
    specialty = np.concatenate(script_specialty)
    n_scripts = len(drug_class)
    generic_share = np.array([c[1] for c in _DRUG_CLASSES])[drug_class]
    generic = ~specialty & (rng.random(n_scripts) < generic_share)
    ndc = _pick_ndc(u, drug_class, generic, specialty, rng)
    mail = rng.random(n_scripts)
    doses = np.where(specialty, 1.0, rng.choice(np.array([1.0, 1.0, 2.0]), size=n_scripts))
    k = len(member)
    ndc_fill = ndc[script]
    spec_fill = specialty[script]
    channel = np.where(spec_fill, 2, (mail[script] < np.where(supply == 90, 0.75, 0.02)))
    allowed = u.ndc_cost30[ndc_fill] * supply / 30.0 * np.where(supply == 90, 0.92, 1.0)
    allowed = allowed * _lognormal(rng, 0.12, k)
    # Specialty fills share a budget taken from the member's latent cost.
    rows = np.flatnonzero(spec_fill)
    if len(rows):
        owner = member[rows]
        n_fills = np.bincount(owner, minlength=m.n)
        budget = m.latent * m.member_months / 12.0 * rng.uniform(0.3, 0.6, m.n) * 100
        per_fill = budget[owner] / np.maximum(n_fills[owner], 1)
        allowed[rows] = per_fill * _lognormal(rng, 0.05, len(rows))
    return _Fills(
        member=member, day=day, ndc=ndc_fill, days_supply=supply,
        channel=channel.astype(np.int64),
        quantity=np.round(supply * u.ndc_units[ndc_fill] * doses[script], 3),
        allowed=np.round(allowed).astype(np.int64),
    )


# --------------------------------------------------------------------------------------------
# Medical claims: episodes and encounters
# --------------------------------------------------------------------------------------------


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
        return _Claims(member=e, template=e, start=e, end=e, admit=e, discharge=e, status=e,
                       drg=e, bill=e, billing=e, other=e, pool=e, dx1=e, driver=e,
                       movable=np.zeros(0, dtype=np.bool_))
    return _Claims(*(np.concatenate([getattr(p, name) for p in parts]) for name in names))


def _pick(car: _Carrier, m: _Members, member: IntArray, kind: IntArray | int,
          rng: Rng) -> IntArray:
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


def _days_in_window(car: _Carrier, rng: Rng, first: IntArray, last: IntArray,
                    elective: BoolArray) -> IntArray:
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


# Episode types.
_MEDICAL, _SURGICAL, _DELIVERY, _NEWBORN, _NICU, _PSYCH, _SUBSTANCE, _REHAB, _ANTEPARTUM = range(9)
_SNF, _HOME_HEALTH, _HOSPICE_HOME, _HOSPICE_INPATIENT, _DIALYSIS = range(10, 15)
_EPISODE_TEMPLATES: dict[int, tuple[str, ...]] = {
    _MEDICAL: ("stay_facility", "stay_hospitalist"),
    _SURGICAL: ("surgical_facility", "stay_hospitalist", "surgeon_inpatient"),
    _DELIVERY: ("delivery_facility", "obstetric_delivery"),
    _NEWBORN: ("newborn_facility", "newborn_care"),
    _NICU: ("nicu_facility", "newborn_care"),
    _PSYCH: ("psych_facility", "psych_attending"),
    _SUBSTANCE: ("substance_facility", "stay_hospitalist"),
    _REHAB: ("rehab_facility", "rehab_attending"),
    _ANTEPARTUM: ("stay_facility", "stay_hospitalist"),
    _SNF: ("snf_facility", "snf_visit"),
    _HOME_HEALTH: ("home_health_episode",),
    _HOSPICE_HOME: ("hospice_home",),
    _HOSPICE_INPATIENT: ("hospice_inpatient",),
    _DIALYSIS: ("dialysis_facility", "dialysis_monthly"),
}
_STAY_TYPES = frozenset(range(9))
_INPATIENT_TYPES = _STAY_TYPES | {_SNF, _HOSPICE_INPATIENT}
#: Relative cost of an episode: fixed part and part per day.
_EPISODE_COST = {
    _MEDICAL: (5.0, 1.6), _SURGICAL: (12.0, 1.6), _DELIVERY: (6.0, 1.2), _NEWBORN: (1.2, 0.4),
    _NICU: (8.0, 2.5), _PSYCH: (2.0, 1.0), _SUBSTANCE: (2.0, 1.0), _REHAB: (3.0, 1.3),
    _ANTEPARTUM: (3.0, 1.2), _SNF: (0.0, 0.5), _HOME_HEALTH: (3.0, 0.0),
    _HOSPICE_HOME: (0.0, 0.15), _HOSPICE_INPATIENT: (0.0, 1.0), _DIALYSIS: (6.0, 0.0),
}
_DRG_POOLS = {
    _MEDICAL: _DRG_MEDICAL, _SURGICAL: _DRG_SURGICAL, _NEWBORN: _DRG_NEWBORN, _NICU: _DRG_NICU,
    _PSYCH: _DRG_PSYCH, _SUBSTANCE: _DRG_SUBSTANCE, _REHAB: _DRG_REHAB,
    _ANTEPARTUM: _DRG_ANTEPARTUM,
}


@dataclass(frozen=True)
class _Episodes:
    member: IntArray
    kind: IntArray
    start: IntArray
    end: IntArray
    drg: IntArray
    facility: IntArray
    status: IntArray


def _stay_los(kind: IntArray, rng: Rng) -> IntArray:
    n = len(kind)
    los = np.select(
        [kind == _MEDICAL, kind == _SURGICAL, kind == _DELIVERY, kind == _NEWBORN,
         kind == _NICU, kind == _PSYCH, kind == _SUBSTANCE, kind == _REHAB],
        [np.minimum(rng.geometric(0.28, n), 30), np.minimum(rng.geometric(0.4, n), 20),
         1 + rng.integers(1, 3, n), np.full(n, 2), np.minimum(4 + rng.geometric(0.06, n), 60),
         np.minimum(3 + rng.geometric(0.12, n), 30), np.minimum(2 + rng.geometric(0.25, n), 14),
         np.minimum(6 + rng.geometric(0.12, n), 30)],
        default=np.minimum(rng.geometric(0.5, n), 7),
    )
    return np.asarray(los, dtype=np.int64)


def _draw_drg(kind: IntArray, rng: Rng) -> IntArray:
    drg = np.full(len(kind), -1, dtype=np.int64)
    for k, pool in _DRG_POOLS.items():
        rows = np.flatnonzero(kind == k)
        drg[rows] = _Choices.of(" ".join(pool), _DRGI).draw(rng, len(rows))
    deliveries = np.flatnonzero(kind == _DELIVERY)
    cesarean = rng.random(len(deliveries)) < 0.32
    vaginal = _Choices.of("807:6 806 805 798 796 768", _DRGI).draw(rng, len(deliveries))
    csect = _Choices.of("788:4 787 786:2 785 784 783", _DRGI).draw(rng, len(deliveries))
    drg[deliveries] = np.where(cesarean, csect, vaginal)
    return drg


def _episodes(car: _Carrier, m: _Members, budget: FloatArray,
              rng: Rng) -> tuple[_Episodes, FloatArray]:
    """Expensive episodes of care and each one's budget (dollars); updates nothing in place."""
    age = np.maximum(m.age, 0)
    annual = budget * 12 / m.member_months
    p_stay = np.clip(np.log10(np.maximum(annual, 1)) - 4.05, 0, 0.85)
    n_stays = np.where(
        rng.random(m.n) < p_stay,
        1 + np.minimum(rng.poisson(np.maximum(annual - 40_000, 0) / 120_000), 4), 0,
    )
    s_member, _w = _expand(n_stays.astype(np.int64))
    k = len(s_member)
    s_age = age[s_member]
    r = rng.random(k)
    substance = m.condition[s_member, _C["substance"]] >= 0
    mental = m.condition[s_member, _C["mental"]] >= 0
    surgical = rng.random(k) < np.where(s_age < 18, 0.15, np.where(s_age < 65, 0.4, 0.25))
    kind = np.where(substance & (r < 0.4), _SUBSTANCE,
                    np.where(mental & (r < 0.35), _PSYCH, np.where(surgical, _SURGICAL, _MEDICAL)))
    drg = _draw_drg(kind, rng)
    elective = np.isin(drg, [_DRGI[d] for d in _DRG_ELECTIVE])
    admit = _days_in_window(car, rng, m.first[s_member], m.last[s_member], elective)

    # Deliveries (with an antepartum stay for some), newborns, deaths in hospital.
    mothers = np.flatnonzero(m.delivery >= 0)
    ante = mothers[rng.random(len(mothers)) < 0.08]
    babies = np.flatnonzero((m.birth >= car.window_start) & (m.birth <= car.window_end))
    nicu = rng.random(len(babies)) < 0.08
    decedents = np.flatnonzero((m.death >= 0) & (age >= 18))
    in_hospital = rng.random(len(decedents)) < 0.45
    terminal = decedents[in_hospital]
    forced_member = np.concatenate([mothers, ante, babies, terminal])
    forced_kind = np.concatenate([
        np.full(len(mothers), _DELIVERY), np.full(len(ante), _ANTEPARTUM),
        np.where(nicu, _NICU, _NEWBORN), np.full(len(terminal), _MEDICAL),
    ]).astype(np.int64)
    forced_drg = _draw_drg(forced_kind, rng)
    ante_day = np.maximum(m.delivery[ante] - rng.integers(10, 90, len(ante)), m.first[ante])
    forced_admit = np.concatenate([
        m.delivery[mothers], ante_day, m.birth[babies], np.zeros(len(terminal), np.int64)])

    member = np.concatenate([s_member, forced_member])
    kind = np.concatenate([kind, forced_kind])
    drg = np.concatenate([drg, forced_drg])
    admit = np.concatenate([admit, forced_admit])
    los = _stay_los(kind, rng)
    is_terminal = np.zeros(len(member), dtype=np.bool_)
    is_terminal[len(member) - len(terminal):] = True
    admit = np.where(is_terminal, np.maximum(m.death[member] - los, m.first[member]), admit)
    discharge = admit + los
    status = np.full(len(member), _DS["01"], dtype=np.int64)
    facility = _pick(car, m, member, np.where(kind == _PSYCH, _PK["psych_hospital"],
                                               _PK["hospital"]), rng)

    # After an acute stay: transfer, rehabilitation, skilled nursing, home health; readmission.
    acute = np.flatnonzero((kind == _MEDICAL) | (kind == _SURGICAL))
    old = age[member[acute]] >= 65
    r = rng.random(len(acute))
    transfer = r < 0.03
    rehab = ~transfer & old & (r < 0.07)
    snf = ~transfer & ~rehab & old & (r < 0.25)
    home = ~transfer & ~rehab & ~snf & (r < np.where(old, 0.37, 0.06))
    readmit_p = np.where(old, 0.17, 0.1)
    readmitted = np.concatenate([
        acute[rng.random(len(acute)) < readmit_p],
        np.flatnonzero(kind == _PSYCH)[rng.random(int((kind == _PSYCH).sum())) < 0.12],
    ])
    status[acute[transfer]] = _DS["02"]
    status[acute[rehab]] = _DS["62"]
    status[acute[snf]] = _DS["03"]
    status[acute[home]] = _DS["06"]
    src = np.concatenate([acute[transfer], acute[rehab], readmitted, acute[snf], acute[home]])
    d_kind = np.concatenate([
        np.full(int(transfer.sum()), _MEDICAL), np.full(int(rehab.sum()), _REHAB),
        np.where(kind[readmitted] == _PSYCH, _PSYCH, _MEDICAL),
        np.full(int(snf.sum()), _SNF), np.full(int(home.sum()), _HOME_HEALTH),
    ]).astype(np.int64)
    gap = np.concatenate([
        np.zeros(int(transfer.sum()) + int(rehab.sum()), np.int64),
        rng.integers(2, 30, len(readmitted)),
        np.zeros(int(snf.sum()), np.int64), np.ones(int(home.sum()), np.int64),
    ])
    d_member = member[src]
    d_start = discharge[src] + gap
    d_los = np.select(
        [d_kind == _SNF, d_kind == _HOME_HEALTH],
        [np.minimum(7 + rng.geometric(0.08, len(src)), 60), np.full(len(src), 29)],
        default=_stay_los(d_kind, rng),
    )
    d_drg = _draw_drg(d_kind, rng)
    readmit_same = np.zeros(len(src), dtype=np.bool_)
    first_readmit = int(transfer.sum()) + int(rehab.sum())
    readmit_same[first_readmit:first_readmit + len(readmitted)] = (
        rng.random(len(readmitted)) < 0.6)
    d_facility_kind = np.select(
        [d_kind == _REHAB, d_kind == _SNF, d_kind == _HOME_HEALTH, d_kind == _PSYCH],
        [_PK["rehab_hospital"], _PK["snf"], _PK["hha"], _PK["psych_hospital"]],
        default=_PK["hospital"],
    )
    d_facility = np.where(readmit_same, facility[src],
                          _pick(car, m, d_member, d_facility_kind, rng))
    keep = d_start <= m.last[d_member]

    # Hospice at the end of life; dialysis every enrolled month.
    old_dead = decedents[~in_hospital & (age[decedents] >= 65)]
    old_dead = old_dead[rng.random(len(old_dead)) < 0.6]
    death = m.death[old_dead]
    gip = rng.random(len(old_dead)) < 0.3
    gip_start = np.maximum(death - rng.integers(1, 5, len(old_dead)), m.first[old_dead])
    home_start = np.maximum(death - rng.integers(5, 60, len(old_dead)), m.first[old_dead])
    home_end = np.where(gip, gip_start - 1, death)
    home_ok = home_end >= home_start
    hospice_facility = _pick(car, m, old_dead, _PK["hospice"], rng)
    dial = np.flatnonzero(m.dialysis)
    dial_member, month_no = _expand(m.member_months[dial])
    dial_member = dial[dial_member]
    month = _month_of(m.first[dial_member]) + month_no
    dial_start = np.maximum(_month_start(month), m.first[dial_member])
    dial_end = np.minimum(_month_start(month + 1) - 1, m.last[dial_member])
    dial_facility = _pick(car, m, dial_member, _PK["dialysis"], rng)

    e_member = np.concatenate([member, d_member[keep], old_dead[home_ok], old_dead[gip],
                               dial_member])
    e = _Episodes(
        member=e_member,
        kind=np.concatenate([kind, d_kind[keep], np.full(int(home_ok.sum()), _HOSPICE_HOME),
                             np.full(int(gip.sum()), _HOSPICE_INPATIENT),
                             np.full(len(dial_member), _DIALYSIS)]).astype(np.int64),
        start=np.concatenate([admit, d_start[keep], home_start[home_ok], gip_start[gip],
                              dial_start]),
        end=np.concatenate([discharge, (d_start + d_los)[keep], home_end[home_ok], death[gip],
                            dial_end]),
        drg=np.concatenate([drg, d_drg[keep], np.full(int(home_ok.sum()) + int(gip.sum())
                                                      + len(dial_member), -1)]),
        facility=np.concatenate([facility, d_facility[keep], hospice_facility[home_ok],
                                 hospice_facility[gip], dial_facility]),
        status=np.concatenate([
            status, np.full(int(keep.sum()), _DS["01"]),
            np.full(int(home_ok.sum()), -1), np.full(int(gip.sum()), _DS["20"]),
            np.full(len(dial_member), -1),
        ]).astype(np.int64),
    )
    # Deaths during an inpatient episode.
    died_in = (
        np.isin(e.kind, list(_INPATIENT_TYPES)) & (m.death[e.member] >= 0)
        & (m.death[e.member] <= e.end)
    )
    e = _Episodes(
        member=e.member, kind=e.kind, start=e.start,
        end=np.where(died_in, m.death[e.member], e.end), drg=e.drg, facility=e.facility,
        status=np.where(died_in, _DS["20"], e.status),
    )
    e = _subset(e, e.end >= e.start)
    e = _subset(e, ~_overlapping(e))

    # Budgets: the episodes take most of the member's medical budget.
    fixed = np.array([_EPISODE_COST.get(k, (0.0, 0.0))[0] for k in range(15)])
    per_day = np.array([_EPISODE_COST.get(k, (0.0, 0.0))[1] for k in range(15)])
    weight = fixed[e.kind] + per_day[e.kind] * (e.end - e.start + 1)
    weight = np.where(np.isin(e.drg, [_DRGI[d] for d in _DRG_SURGICAL]), weight * 1.4, weight)
    return e, weight


def _subset(e: _Episodes, keep: BoolArray) -> _Episodes:
    return _Episodes(**{f: getattr(e, f)[keep] for f in _Episodes.__dataclass_fields__})


def _overlapping(e: _Episodes) -> BoolArray:
    """Inpatient episodes that start before the member's previous one ended (or after a
    death): a person is in one bed at a time. Later episodes give way."""
    inpatient = np.isin(e.kind, list(_INPATIENT_TYPES))
    drop = np.zeros(len(e.member), dtype=np.bool_)
    while True:
        rows = np.flatnonzero(inpatient & ~drop)
        order = rows[np.lexsort((e.end[rows], e.start[rows], e.member[rows]))]
        same = e.member[order][1:] == e.member[order][:-1]
        free_from = np.where(e.status[order][:-1] == _DS["20"], np.iinfo(np.int64).max,
                             e.end[order][:-1])
        clash = same & (e.start[order][1:] < free_from)
        if not clash.any():
            return drop
        drop[order[1:][clash]] = True


def _episode_claims(car: _Carrier, m: _Members, e: _Episodes, pool_offset: int,
                    rng: Rng) -> _Claims:
    parts: list[_Claims] = []
    n = len(e.member)
    pool = pool_offset + np.arange(n, dtype=np.int64)
    dx1 = np.full(n, -1, dtype=np.int64)
    has_drg = e.drg >= 0
    drg_dx = np.array([_DX[_DRG_DX[d]] for d in _VOCAB.drg], dtype=np.int64)
    dx1[has_drg] = drg_dx[e.drg[has_drg]]
    for kind, pool_name in ((_SNF, "rehab"), (_HOME_HEALTH, "elderly"),
                            (_HOSPICE_HOME, "hospice"), (_HOSPICE_INPATIENT, "hospice"),
                            (_DIALYSIS, "renal")):
        rows = np.flatnonzero(e.kind == kind)
        dx1[rows] = _DX_POOL_CHOICES[pool_name].draw(rng, len(rows))
    los = e.end - e.start
    inpatient = np.isin(e.kind, list(_INPATIENT_TYPES))
    split = np.isin(e.kind, list(_STAY_TYPES)) & (los > 14)

    for kind, names in _EPISODE_TEMPLATES.items():
        rows = np.flatnonzero(e.kind == kind)
        if not len(rows):
            continue
        facility_template = _EPISODE_CLAIMS[names[0]]
        attending = (
            _pick(car, m, e.member[rows], _PK[facility_template.other], rng)
            if facility_template.other else np.full(len(rows), -1, dtype=np.int64)
        )
        for name in names:
            t = _EPISODE_TEMPLATE[name]
            tmpl = _EPISODE_CLAIMS[name]
            mem = e.member[rows]
            k = len(rows)
            none = np.full(k, -1, dtype=np.int64)
            if tmpl.claim_type == _I:
                is_inp = inpatient[rows]
                base = dict(
                    member=mem, template=np.full(k, t), start=e.start[rows], end=e.end[rows],
                    admit=np.where(is_inp, e.start[rows], -1),
                    discharge=np.where(is_inp, e.end[rows], -1), status=e.status[rows],
                    drg=e.drg[rows], bill=none, billing=e.facility[rows],
                    other=np.where(rng.random(k) < 0.6, attending, -1), pool=pool[rows],
                    dx1=dx1[rows], driver=none, movable=np.zeros(k, dtype=np.bool_),
                )
                sp = split[rows]
                if sp.any():
                    # A long stay billed as two interim claims with adjacent or overlapping
                    # dates at the same facility.
                    middle = e.start[rows] + los[rows] // 2
                    whole = {key: val[~sp] for key, val in base.items()}
                    first = {key: val[sp] for key, val in base.items()}
                    second = {key: val[sp] for key, val in base.items()}
                    first.update(end=middle[sp], discharge=np.full(int(sp.sum()), -1),
                                 status=np.full(int(sp.sum()), _DS["30"]),
                                 bill=np.full(int(sp.sum()), _BILL["112"]))
                    overlap = rng.random(int(sp.sum())) < 0.4
                    second.update(start=middle[sp] + np.where(overlap, 0, 1),
                                  bill=np.full(int(sp.sum()), _BILL["114"]))
                    for part in (whole, first, second):
                        parts.append(_Claims(**part))
                else:
                    parts.append(_Claims(**base))
            else:
                same = tmpl.provider == facility_template.other
                billing = attending if same else _pick(car, m, mem, _PK[tmpl.provider], rng)
                if tmpl.daily:
                    start, end = e.start[rows], e.end[rows]
                elif name == "snf_visit":
                    start = np.minimum(e.start[rows] + 1, e.end[rows])
                    end = start
                else:
                    start, end = e.start[rows], e.start[rows]
                parts.append(_Claims(
                    member=mem, template=np.full(k, t), start=start, end=end, admit=none,
                    discharge=none, status=none, drg=e.drg[rows] if name == "surgeon_inpatient"
                    else none, bill=none, billing=billing, other=e.facility[rows],
                    pool=pool[rows], dx1=dx1[rows], driver=none,
                    movable=np.zeros(k, dtype=np.bool_),
                ))
    return _concat_claims(parts)


# Condition-driven encounters: condition, kinds (with weights), visits per year.
_FORCED: tuple[tuple[str, str, float], ...] = (
    ("mental", "psych_office:8 psych_telehealth:5 psych_community:4 psych_partial "
               "psych_hospital_outpatient:2", 4.0),
    ("substance", "substance_outpatient:6 opioid_treatment:3 substance_residential", 5.0),
    ("hiv", "hiv_visit", 3.0),
    ("cancer", "oncology_infusion", 5.0),
    ("ckd", "nephrology_visit", 2.0),
)


def _forced_events(car: _Carrier, m: _Members,
                   rng: Rng) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
    """(member, kind, day, dx1, driver) of encounters that conditions and screening bring."""
    users = m.latent > 0
    exposure = m.member_months / 12.0
    members: list[IntArray] = []
    kinds: list[IntArray] = []
    days: list[IntArray] = []
    drivers: list[IntArray] = []

    def add(member: IntArray, kind: IntArray, day: IntArray, driver: int) -> None:
        members.append(member)
        kinds.append(kind)
        days.append(day)
        drivers.append(np.full(len(member), driver, dtype=np.int64))

    # Diabetes: office visits with the diagnosis, and HbA1c tests for most.
    diabetic = (m.condition[:, _C["diabetes"]] >= 0) & users
    visits = np.where(diabetic, np.where(m.member_months >= 4, 2, 1)
                      + rng.poisson(1.5 * exposure), 0)
    mem, _w = _expand(visits.astype(np.int64))
    add(mem, np.full(len(mem), _KIND["diabetes_visit"]),
        _uniform_days(rng, m.first[mem], m.last[mem]), _C["diabetes"])
    tests = np.where(diabetic & (rng.random(m.n) < 0.85), 1 + rng.poisson(0.8 * exposure), 0)
    mem, _w = _expand(tests.astype(np.int64))
    add(mem, np.full(len(mem), _KIND["hba1c_lab"]),
        _uniform_days(rng, m.first[mem], m.last[mem]), _C["diabetes"])

    for condition, text, rate in _FORCED:
        c = _C[condition]
        has = (m.condition[:, c] >= 0) & users
        if condition == "cancer":
            has &= m.latent >= 20_000
        count = np.where(has, rng.poisson(rate * exposure), 0)
        mem, _w = _expand(count.astype(np.int64))
        choices = _Choices.of(text, _KIND)
        add(mem, choices.draw(rng, len(mem)), _uniform_days(rng, m.first[mem], m.last[mem]), c)

    # Prenatal care before a delivery.
    mothers = np.flatnonzero(m.delivery >= 0)
    mem, visit = _expand(np.full(len(mothers), 7, dtype=np.int64))
    mem = mothers[mem]
    day = m.delivery[mem] - 14 - visit * 28 - rng.integers(0, 7, len(mem))
    ok = day >= m.first[mem]
    add(mem[ok], np.full(int(ok.sum()), _KIND["prenatal_visit"]), day[ok], _C["pregnancy"])

    # Screening mammograms for women 50-74.
    age = np.maximum(m.age, 0)
    women = (m.sex == 0) & (age >= 50) & (age < 75) & users & (rng.random(m.n) < 0.62)
    mem = np.flatnonzero(women)
    kind = np.where(rng.random(len(mem)) < 0.55, _KIND["mammogram_office"],
                    _KIND["mammogram_hospital"])
    add(mem, kind, _uniform_days(rng, m.first[mem], m.last[mem]), -1)

    member = np.concatenate(members)
    driver = np.concatenate(drivers)
    dx1 = np.full(len(member), -1, dtype=np.int64)
    has_driver = driver >= 0
    dx1[has_driver] = m.condition[member[has_driver], driver[has_driver]]
    return member, np.concatenate(kinds).astype(np.int64), np.concatenate(days), dx1, driver


def _event_claims(car: _Carrier, m: _Members, member: IntArray, kind: IntArray, day: IntArray,
                  dx1: IntArray, driver: IntArray, rng: Rng) -> _Claims:
    n_claims = np.array([len(_KIND_TEMPLATES[k]) for k in range(len(_KINDS))])[kind]
    event, within = _expand(n_claims.astype(np.int64))
    first_template = np.array([t[0] for t in _KIND_TEMPLATES])
    template = first_template[kind[event]] + within
    mem = member[event]
    k = len(event)
    billing = _pick(car, m, mem, _TEMPLATE_PROVIDER[template], rng)
    other = np.full(k, -1, dtype=np.int64)
    rows = np.flatnonzero(_TEMPLATE_OTHER[template] >= 0)
    other[rows] = _pick(car, m, mem[rows], _TEMPLATE_OTHER[template[rows]], rng)
    # Claims of one encounter agree on who was where (the ED physician at that hospital).
    head = np.flatnonzero(within == 0)[event]
    match_head = (within > 0) & (_TEMPLATE_OTHER[template] == _TEMPLATE_PROVIDER[template[head]])
    other[match_head] = billing[head[match_head]]
    second = np.flatnonzero(within == 1)
    head_of_second = head[second]
    match = _TEMPLATE_OTHER[template[head_of_second]] == _TEMPLATE_PROVIDER[template[second]]
    other[head_of_second[match]] = billing[second[match]]

    dx = dx1[event].copy()
    rows = np.flatnonzero(dx < 0)
    dx[rows] = _KIND_DX.draw(kind[event[rows]], rng)
    start = day[event]
    none = np.full(k, -1, dtype=np.int64)
    days = _KIND_DAYS[kind[event]]
    return _Claims(
        member=mem, template=template, start=start, end=start + days - 1, admit=none,
        discharge=none, status=none, drg=none, bill=none, billing=billing, other=other,
        pool=mem, dx1=dx, driver=driver[event], movable=days == 1,
    )


def _sampled_events(car: _Carrier, m: _Members, remaining: FloatArray, target_lines: float,
                    rng: Rng) -> tuple[IntArray, IntArray, IntArray]:
    """(member, kind, day) of ordinary encounters; more of them the more a member costs."""
    age_group = np.digitize(np.maximum(m.age, 0), [18, 65])
    annual = remaining * 12 / m.member_months
    tier = np.digitize(annual, [1_000, 5_000, 20_000])
    group = age_group * 4 + tier
    freq = np.array([_KINDS[k].freq for k in _SAMPLED])  # (kinds, 3)
    tiers = np.array([_KINDS[k].tier for k in _SAMPLED])  # (kinds, 4)
    prob = np.einsum("ka,kt->atk", freq, tiers).reshape(12, len(_SAMPLED))
    prob = prob / prob.sum(axis=1, keepdims=True)
    lines_per_event = prob @ _KIND_LINES[_SAMPLED]
    users = remaining > 0
    intensity = np.where(users, remaining**_EVENT_EXPONENT, 0.0)
    expected = float((intensity * lines_per_event[group]).sum())
    scale = max(target_lines, 0.0) / expected if expected > 0 else 0.0
    count = np.where(users, np.maximum(rng.poisson(intensity * scale), 1), 0)
    event_member, _w = _expand(count.astype(np.int64))
    g = group[event_member]
    kind = np.empty(len(event_member), dtype=np.int64)
    cum = np.cumsum(prob, axis=1)
    u = rng.random(len(event_member))
    for gi in range(12):
        rows = np.flatnonzero(g == gi)
        if len(rows):
            kind[rows] = _SAMPLED[
                np.minimum(np.searchsorted(cum[gi], u[rows], side="right"), len(_SAMPLED) - 1)]
    day = _days_in_window(car, rng, m.first[event_member], m.last[event_member],
                          _ELECTIVE[kind])
    return event_member, kind, day


#: How the number of encounters grows with a member's cost (cost ** exponent).
_EVENT_EXPONENT = 0.6


# --------------------------------------------------------------------------------------------
# Lines, amounts, statuses: the medical_claims table
# --------------------------------------------------------------------------------------------

_DAILY_INITIAL = _Choices.of("99221 99222:2 99223:2", _HCPCS)
_DAILY_NEXT = _Choices.of("99231 99232:2 99233", _HCPCS)
_DAILY_LAST = _Choices.of("99238:2 99239", _HCPCS)
_DRG_SURGEON_CPT = np.array(
    [_HCPCS[_DRG_CPT[d]] if d in _DRG_CPT else _HCPCS["27447"] for d in _VOCAB.drg],
    dtype=np.int64)
_SURGEON_TEMPLATE = _EPISODE_TEMPLATE["surgeon_inpatient"]
_ED_FACILITY_TEMPLATE = _KIND_TEMPLATES[_KIND["emergency"]][0]
_MAX_DAILY_LINES = 8


@dataclass(frozen=True)
class _Lines:
    claim: IntArray
    seq: IntArray  # order within the claim
    hcpcs: IntArray
    revenue: IntArray
    weight: FloatArray
    share: IntArray
    offset: IntArray  # service day minus the claim's start (hospital visits)


def _lines(claims: _Claims, window_end: int, rng: Rng) -> _Lines:
    template = claims.template
    claim, j = _expand(_TEMPLATE_SPEC_COUNT[template])
    spec = _TEMPLATE_SPEC_START[template[claim]] + j
    keep = rng.random(len(spec)) < _SPEC_P[spec]
    claim, spec = claim[keep], spec[keep]
    hcpcs = _SPEC_HCPCS.draw(spec, rng)
    surgeon = np.flatnonzero(spec == _TEMPLATE_SPEC_START[_SURGEON_TEMPLATE])
    hcpcs[surgeon] = _DRG_SURGEON_CPT[claims.drg[claim[surgeon]]]

    # A hospital stay's professional claim has a visit on each day (up to a limit), none
    # after the data's window.
    daily = np.flatnonzero(_TEMPLATE_DAILY[template])
    span = claims.end[daily] - claims.start[daily]
    count = np.minimum(span + 1, _MAX_DAILY_LINES)
    owner, d = _expand(count)
    last = (d == count[owner] - 1) & (d > 0)
    in_window = claims.start[daily[owner]] + np.where(last, span[owner], d) <= window_end
    owner, d, last = owner[in_window], d[in_window], last[in_window]
    n_daily = len(owner)
    daily_hcpcs = np.where(d == 0, _DAILY_INITIAL.draw(rng, n_daily),
                           np.where(last, _DAILY_LAST.draw(rng, n_daily),
                                    _DAILY_NEXT.draw(rng, n_daily)))
    return _Lines(
        claim=np.concatenate([claim, daily[owner]]),
        seq=np.concatenate([_SPEC_SEQ[spec], d]),
        hcpcs=np.concatenate([hcpcs, daily_hcpcs]),
        revenue=np.concatenate([_SPEC_REV.draw(spec, rng), np.full(n_daily, -1)]),
        weight=np.concatenate([_SPEC_WEIGHT[spec],
                               np.where(d == 0, 1.4, np.where(last, 1.0, 0.8))]),
        share=np.concatenate([_SPEC_SHARE[spec], np.full(n_daily, _SHARE_CODE["coins"])]),
        offset=np.concatenate([np.zeros(len(spec), dtype=np.int64),
                               np.where(last, span[owner], d)]),
    )


def _expected_claim_lines(claims: _Claims) -> float:
    per_template = np.array([_expected_lines(t) for t in _TEMPLATES])
    daily = np.array([t.daily for t in _TEMPLATES])[claims.template]
    span = np.minimum(claims.end - claims.start + 1, _MAX_DAILY_LINES)
    return float(np.where(daily, span, per_template[claims.template]).sum())


def _dx_matrix(claims: _Claims, m: _Members, rng: Rng) -> IntArray:
    """dx1..dx10 (rows) of each claim (columns): the principal, the member's conditions,
    then other secondary diagnoses (more on institutional claims), distinct within a claim."""
    n = len(claims.member)
    dx = np.full((10, n), -1, dtype=np.int64)
    dx[0] = claims.dx1
    filled = np.zeros(n, dtype=np.int64)
    for c in range(len(_CONDITIONS)):
        codes = m.condition[:, c][claims.member]
        rows = np.flatnonzero(codes >= 0)
        rows = rows[(rng.random(len(rows)) < 0.45) & (codes[rows] != claims.dx1[rows])
                    & (claims.driver[rows] != c) & (filled[rows] < 8)]
        filled[rows] += 1
        dx[filled[rows], rows] = codes[rows]
    pool = _DX_POOL_CHOICES["secondary"].index
    extra = rng.binomial(9, np.where(_INSTITUTIONAL[claims.template], 0.3, 0.06))
    extra = np.minimum(extra, 9 - filled)
    first = rng.integers(0, len(pool), n)
    for j in range(int(extra.max()) if n else 0):
        rows = np.flatnonzero(extra > j)
        dx[filled[rows] + 1 + j, rows] = pool[(first[rows] + j) % len(pool)]
    return dx


def _outside_enrollment(car: _Carrier, m: _Members, member: IntArray, day: IntArray,
                        candidate: BoolArray, share: float, rng: Rng) -> IntArray:
    """Move about ``share`` of all items to a month in which the member is not enrolled."""
    ws, we = car.window_start, car.window_end
    before = _month_start(_month_of(m.first)) - ws
    after_start = _month_start(_month_of(m.last) + 1)
    after = np.maximum(we - after_start + 1, 0)
    gap = (before + after)[member]
    eligible = candidate & (gap > 0)
    if not eligible.any():
        return day
    p = min(1.0, share * len(day) / int(eligible.sum()))
    move = np.flatnonzero(eligible & (rng.random(len(day)) < p))
    r = np.floor(rng.random(len(move)) * gap[move]).astype(np.int64)
    b = before[member[move]]
    new_day = day.copy()
    new_day[move] = np.where(r < b, ws + r, after_start[member[move]] + r - b)
    return new_day


def _paid_dates(start: IntArray, end: IntArray, rng: Rng) -> IntArray:
    lag = rng.choice(len(_LAG), size=len(start), p=_LAG)
    month = _month_of(start) + lag
    month_first = _month_start(month)
    month_last = _month_start(month + 1) - 1
    low = np.where(lag == 0, start, month_first)
    return np.maximum(_uniform_days(rng, low, month_last), end)


@dataclass(frozen=True)
class _PlanTerms:
    deductible: IntArray
    coinsurance: FloatArray
    copay: IntArray
    er_copay: IntArray
    oop_max: IntArray
    hdhp: BoolArray

    @classmethod
    def of(cls, plans: Sequence[_Plan], plan: IntArray) -> _PlanTerms:
        return cls(
            deductible=np.array([p.deductible for p in plans], dtype=np.int64)[plan],
            coinsurance=np.array([p.coinsurance for p in plans])[plan],
            copay=np.array([p.copay for p in plans], dtype=np.int64)[plan],
            er_copay=np.array([p.er_copay for p in plans], dtype=np.int64)[plan],
            oop_max=np.array([p.oop_max for p in plans], dtype=np.int64)[plan],
            hdhp=np.array([p.hdhp for p in plans])[plan],
        )


def _cost_shares(
    car: _Carrier, m: _Members, member: IntArray, day: IntArray, order_key: IntArray,
    allowed: IntArray, share: IntArray, emergency: BoolArray, in_network: BoolArray,
    paid: BoolArray,
) -> tuple[IntArray, IntArray, IntArray]:
    """Deductible, coinsurance and copay of each line (cents), in date order per member."""
    plan = np.where((m.switch[member] >= 0) & (day >= m.switch[member]), m.plan2[member],
                    m.plan[member])
    terms = _PlanTerms.of(car.plans, plan)
    liable = paid & ~m.medicare[member]
    copay_line = liable & (share == _SHARE_CODE["copay"]) & ~terms.hdhp
    coins_line = liable & ((share == _SHARE_CODE["coins"])
                           | ((share == _SHARE_CODE["copay"]) & terms.hdhp))
    span = int(order_key.max()) + 1 if len(order_key) else 1
    order = np.argsort((member * 1024 + (day - car.window_start + 64)) * span + order_key,
                       kind="stable")
    mem_s = member[order]
    base = np.where(coins_line, allowed, 0)[order]
    before = _cumsum_by_group(mem_s, base) - base
    deductible = np.zeros(len(member), dtype=np.int64)
    deductible[order] = np.clip(terms.deductible[order] - before, 0, base)
    rate = terms.coinsurance + np.where(in_network, 0.0, 0.2)
    coinsurance = np.where(coins_line, np.round((allowed - deductible) * rate), 0).astype(
        np.int64)
    copay = np.where(copay_line, np.minimum(np.where(emergency, terms.er_copay, terms.copay),
                                            allowed), 0)
    # The out-of-pocket maximum caps coinsurance.
    spent = (deductible + coinsurance + copay)[order]
    before = _cumsum_by_group(mem_s, spent) - spent
    room = np.maximum(terms.oop_max[order] - before, 0)
    excess = np.maximum(spent - room, 0)
    cut = np.zeros(len(member), dtype=np.int64)
    cut[order] = np.minimum(excess, coinsurance[order])
    coinsurance = coinsurance - cut
    return deductible, coinsurance, copay.astype(np.int64)


def _medical_table(car: _Carrier, m: _Members, claims: _Claims, budgets: FloatArray,
                   claim_offset: int, rng: Rng) -> tuple[pa.Table, int, IntArray]:
    """The medical_claims rows of a block, the number of claims, and the providers used."""
    # Some encounters are dated in a month the member is not enrolled.
    start = _outside_enrollment(car, m, claims.member, claims.start, claims.movable, 0.005, rng)
    shift = start - claims.start
    claims = _Claims(**{**{f: getattr(claims, f) for f in _Claims.__dataclass_fields__},
                        "start": start, "end": claims.end + shift})
    # Claim numbers follow the service date: put the claims in that order.
    key = ((claims.start - car.window_start + 64) * (m.n + 1) + claims.member) * 256
    by_date = np.argsort(key + claims.template, kind="stable")
    claims = _Claims(*(getattr(claims, f)[by_date] for f in _Claims.__dataclass_fields__))
    rank = np.arange(len(by_date), dtype=np.int64)
    lines = _lines(claims, car.window_end, rng)
    c = lines.claim
    n_lines = len(c)

    # Allowed amounts: relative prices scaled to each budget.
    raw = lines.weight * _lognormal(rng, 0.35, n_lines)
    pool = claims.pool[c]
    pool_raw = _group_sum(pool, raw, len(budgets))
    factor = np.divide(budgets * 100, pool_raw, out=np.zeros(len(budgets)), where=pool_raw > 0)
    allowed = np.round(raw * factor[pool]).astype(np.int64)

    institutional = _INSTITUTIONAL[claims.template]
    n_claims = len(claims.member)
    markup = np.where(institutional, rng.uniform(1.8, 3.2, n_claims),
                      rng.uniform(1.3, 2.2, n_claims))
    in_network = car.in_network[claims.billing]
    markup = markup + np.where(in_network, 0.0, 0.3)
    charge = np.round(allowed * markup[c]).astype(np.int64)

    # Denials: some single lines, and some whole (small) claims.
    small = _group_sum(c, allowed, n_claims) < 300_000
    denied_claim = small & (rng.random(n_claims) < 0.02)
    denied = denied_claim[c] | (small[c] & (rng.random(n_lines) < 0.035))
    allowed = np.where(denied, 0, allowed)
    network_null = rng.random(n_claims) < 0.01

    line_start = claims.start[c] + lines.offset
    daily = _TEMPLATE_DAILY[claims.template][c]
    line_end = np.where(daily, line_start, claims.end[c])
    deductible, coinsurance, copay = _cost_shares(
        car, m, claims.member[c], line_start, rank[c] * 64 + lines.seq, allowed, lines.share,
        claims.template[c] == _ED_FACILITY_TEMPLATE, in_network[c], ~denied,
    )
    paid = allowed - deductible - coinsurance - copay
    paid_date = _paid_dates(claims.start, claims.end, rng)[c]

    # Reversed and adjusted claims get more versions.
    has_denial = _group_sum(c, denied, n_claims) > 0
    r = rng.random(n_claims)
    reversed_claim = ~has_denial & (r < 0.02)
    adjusted_claim = ~has_denial & (r >= 0.02) & (r < 0.035)
    factor_adj = rng.uniform(0.85, 1.15, n_claims)
    later = rng.integers(15, 90, n_claims)
    rev_rows = np.flatnonzero(reversed_claim[c] | adjusted_claim[c])
    adj_rows = np.flatnonzero(adjusted_claim[c])
    new_allowed = np.round(allowed[adj_rows] * factor_adj[c[adj_rows]]).astype(np.int64)
    new_ded = np.minimum(deductible[adj_rows], new_allowed)
    new_copay = np.minimum(copay[adj_rows], new_allowed - new_ded)
    new_coins = np.minimum(np.round(coinsurance[adj_rows] * factor_adj[c[adj_rows]]),
                           new_allowed - new_ded - new_copay).astype(np.int64)

    row = np.concatenate([np.arange(n_lines), rev_rows, adj_rows])
    version = np.concatenate([np.ones(n_lines, np.int64), np.full(len(rev_rows), 2),
                              np.full(len(adj_rows), 3)])
    sign = np.where(version == 2, -1, 1)
    status = np.concatenate([
        np.where(denied, 1, 0), np.full(len(rev_rows), 2), np.full(len(adj_rows), 3)])

    def versions(v1: IntArray, v3: IntArray) -> IntArray:
        return np.concatenate([v1, -v1[rev_rows], v3])

    allowed_all = versions(allowed, new_allowed)
    ded_all = versions(deductible, new_ded)
    coins_all = versions(coinsurance, new_coins)
    copay_all = versions(copay, new_copay)
    paid_all = allowed_all - ded_all - coins_all - copay_all
    charge_all = charge[row] * sign
    paid_date_all = paid_date[row] + np.where(version > 1, later[c[row]], 0)
    denied_all = status == 1
    del paid

    # Row order: claim, version, line.
    line_cc = c[row]
    order = np.argsort((rank[line_cc] * 4 + version) * 64 + lines.seq[row], kind="stable")
    row, version, status = row[order], version[order], status[order]
    line_cc = line_cc[order]
    allowed_all, ded_all, coins_all, copay_all, paid_all, charge_all = (
        x[order] for x in (allowed_all, ded_all, coins_all, copay_all, paid_all, charge_all))
    paid_date_all, denied_all = paid_date_all[order], denied_all[order]
    claim_key = rank[line_cc] * 4 + version
    first = _first_in_group(claim_key)
    run_start = np.flatnonzero(first)
    line_no = np.arange(len(row)) - run_start[np.cumsum(first) - 1] + 1

    dx = _dx_matrix(claims, m, rng)
    ct = claims.template[line_cc]
    inst = _INSTITUTIONAL[ct]
    bill = np.where(claims.bill >= 0, claims.bill, _TEMPLATE_BILL.draw(claims.template, rng))
    pos = _TEMPLATE_POS.draw(claims.template, rng)
    billing, other = claims.billing[line_cc], claims.other[line_cc]
    facility = np.where(inst, billing, other)
    rendering = np.where(inst, other, billing)
    npi = car.universe.npi
    providers = _used_indices(np.concatenate([claims.billing, claims.other]), len(car.in_network))

    def provider_ids(index: IntArray) -> pa.Array:
        return _used(npi, index)

    member_ids = _encoded(_member_ids(car, m.number), claims.member[line_cc])
    claim_ids = _ids(f"{car.carrier_id}C", claim_offset + rank + 1, 10).take(pa.array(line_cc))
    net_null = network_null[line_cc]
    columns: dict[str, pa.Array] = {
        "claim_id": claim_ids,
        "claim_line": pa.array(line_no, type=pa.int64()),
        "claim_status": _codes(_STATUSES, status),
        "member_id": member_ids,
        "claim_type": _codes(("institutional", "professional"), (~inst).astype(np.int64)),
        "claim_start_date": _dates(line_start[row]),
        "claim_end_date": _dates(line_end[row]),
        "admission_date": _dates(claims.admit[line_cc], claims.admit[line_cc] < 0),
        "discharge_date": _dates(claims.discharge[line_cc], claims.discharge[line_cc] < 0),
        "discharge_status": _codes(_DISCHARGE, claims.status[line_cc]),
        "place_of_service": _codes(_VOCAB.pos, np.where(inst, -1, pos[line_cc])),
        "bill_type": _codes(_VOCAB.bill_type, np.where(inst, bill[line_cc], -1)),
        "revenue_code": _codes(_VOCAB.revenue, np.where(inst, lines.revenue[row], -1)),
        "hcpcs": _codes(_VOCAB.hcpcs, lines.hcpcs[row]),
        "drg": _codes(_VOCAB.drg, np.where(inst, claims.drg[line_cc], -1)),
        **{f"dx{i + 1}": _codes(_VOCAB.dx, dx[i][line_cc]) for i in range(10)},
        "facility_npi": provider_ids(facility),
        "rendering_npi": provider_ids(rendering),
        "in_network": pa.array(in_network[line_cc], mask=net_null if net_null.any() else None),
        "charge_amount": _money(charge_all),
        "allowed_amount": _money(allowed_all),
        "paid_amount": _money(paid_all),
        "paid_date": _dates(paid_date_all, denied_all),
        "deductible_amount": _money(ded_all, denied_all),
        "coinsurance_amount": _money(coins_all, denied_all),
        "copay_amount": _money(copay_all, denied_all),
        "denial_reason": _codes(
            _DENIAL_REASONS,
            np.where(denied_all, rng.integers(0, len(_DENIAL_REASONS), len(row)), -1)),
        "claim_version": pa.array(version, type=pa.int64()),
    }
    return _table(MEDICAL_CLAIMS, columns), n_claims, providers


def _member_ids(car: _Carrier, numbers: IntArray) -> pa.Array:
    return _ids(f"{car.carrier_id}M", numbers, 7)


# --------------------------------------------------------------------------------------------
# Pharmacy and eligibility tables
# --------------------------------------------------------------------------------------------


def _pharmacy_table(car: _Carrier, m: _Members, fills: _Fills, fill_offset: int,
                    rng: Rng) -> tuple[pa.Table, int, IntArray]:
    """The pharmacy_claims rows, the number of fills, and allowed cents by quarter x class."""
    u = car.universe
    day = _outside_enrollment(car, m, fills.member, fills.day,
                              np.ones(len(fills.day), dtype=np.bool_), 0.005, rng)
    k = len(day)
    rank = np.empty(k, dtype=np.int64)
    rank[np.lexsort((fills.ndc, fills.member, day))] = np.arange(k)
    generic = u.ndc_generic[fills.ndc]
    specialty = u.ndc_specialty[fills.ndc]
    ninety = fills.days_supply == 90
    copay = np.where(generic, np.where(ninety, 2_000, 1_000), np.where(ninety, 9_000, 4_500))
    member_paid = np.where(specialty, np.minimum(np.round(fills.allowed * 0.25), 35_000), copay)
    member_paid = np.minimum(member_paid, fills.allowed).astype(np.int64)
    r = rng.random(k)
    denied = r < 0.025
    reversed_fill = (r >= 0.025) & (r < 0.045)
    allowed = np.where(denied, 0, fills.allowed)
    member_paid = np.where(denied, 0, member_paid)
    paid = allowed - member_paid
    paid_day = day + rng.choice(4, size=k, p=[0.7, 0.15, 0.1, 0.05])

    rev = np.flatnonzero(reversed_fill)
    row = np.concatenate([np.arange(k), rev])
    is_rev = np.concatenate([np.zeros(k, dtype=np.bool_), np.ones(len(rev), dtype=np.bool_)])
    sign = np.where(is_rev, -1, 1)
    order = np.lexsort((is_rev, rank[row]))
    row, is_rev, sign = row[order], is_rev[order], sign[order]
    status = np.where(is_rev, 2, np.where(denied[row], 1, 0))
    later = np.where(is_rev, rng.integers(3, 40, len(row)), 0)
    drug_class = u.ndc_class[fills.ndc[row]]
    class_null = rng.random(len(row)) < 0.003
    columns: dict[str, pa.Array] = {
        "claim_id": _ids(f"{car.carrier_id}R", fill_offset + rank[row] + 1, 10),
        "claim_status": _codes(_STATUSES, status),
        "member_id": _encoded(_member_ids(car, m.number), fills.member[row]),
        "fill_date": _dates(day[row]),
        "paid_date": _dates(paid_day[row] + later, denied[row]),
        "ndc": _encoded(u.ndc, fills.ndc[row]),
        "drug_class": _codes([c[0] for c in _DRUG_CLASSES],
                             np.where(class_null, -1, drug_class)),
        "quantity": pa.array(fills.quantity[row], type=pa.float64()),
        "days_supply": pa.array(fills.days_supply[row], type=pa.int64()),
        "generic": pa.array(generic[row]),
        "specialty": pa.array(specialty[row]),
        "channel": _codes(_CHANNELS, fills.channel[row]),
        "allowed_amount": _money(allowed[row] * sign),
        "paid_amount": _money(paid[row] * sign),
        "member_paid_amount": _money(member_paid[row] * sign),
    }
    quarter = (_month_of(day[row]) - _month_of(np.array([car.window_start]))[0]) // 3
    known = ~class_null
    by_quarter_class = np.zeros((4, len(_DRUG_CLASSES)), dtype=np.int64)
    np.add.at(by_quarter_class, (quarter[known], drug_class[known]), (allowed[row] * sign)[known])
    return _table(PHARMACY_CLAIMS, columns), k, by_quarter_class


def _eligibility_table(car: _Carrier, m: _Members) -> pa.Table:
    two = m.switch >= 0
    member = np.concatenate([np.arange(m.n), np.flatnonzero(two)])
    second = np.concatenate([np.zeros(m.n, dtype=np.bool_), np.ones(int(two.sum()), np.bool_)])
    order = np.lexsort((second, member))
    member, second = member[order], second[order]
    start = np.where(second, m.switch[member], m.span_start[member])
    end = np.where(second | ~two[member], m.span_end[member], m.switch[member] - 1)
    plan = np.where(second, m.plan2[member], m.plan[member])
    plans = [p.code for p in car.plans]
    hdhp = np.array([p.hdhp for p in car.plans])[plan]
    death = m.death[member]
    columns: dict[str, pa.Array] = {
        "member_id": _member_ids(car, m.number[member]),
        "program": _codes(_PROGRAMS, m.program[member]),
        "plan_code": _codes(plans, plan),
        "birth_date": _dates(m.birth[member]),
        "sex": _codes(_SEXES, m.sex[member]),
        "state": _codes(_STATE_CODES, m.state[member]),
        "enrollment_start_date": _dates(start),
        "enrollment_end_date": _dates(end, end < 0),
        "medicare_primary": pa.array(m.medicare[member]),
        "subscriber_id": _member_ids(car, m.subscriber[member]),
        "relationship": _codes(_RELATIONSHIPS, m.relationship[member]),
        "death_date": _dates(death, death < 0),
        "enrollee_type": _codes(_ENROLLEE_TYPES, m.enrollee_type[member]),
        "coverage_tier": _codes(_TIERS, m.coverage_tier[member]),
        "hdhp": pa.array(hdhp),
    }
    return _table(ELIGIBILITY, columns)


# --------------------------------------------------------------------------------------------
# Carriers, block by block
# --------------------------------------------------------------------------------------------


@dataclass
class _Totals:
    """What carries over from one block of a carrier to the next."""

    members: int = 0
    claims: int = 0
    fills: int = 0
    providers: list[IntArray] = field(default_factory=list)
    rx_by_quarter_class: IntArray = field(
        default_factory=lambda: np.zeros((4, len(_DRUG_CLASSES)), dtype=np.int64))


def _block(car: _Carrier, n: int, totals: _Totals, rng: Rng) -> dict[str, pa.Table]:
    m = _members(car, totals.members + 1, n, rng)
    fills = _pharmacy(car, m, rng)
    rx = _group_sum(fills.member, fills.allowed, m.n) / 100
    floor = np.where(m.latent > 0, 40 + 80 * rng.random(m.n), 0.0)
    budget = np.maximum(m.latent * m.member_months / 12 - rx, floor)

    episodes, weight = _episodes(car, m, budget, rng)
    # Some episodes need a minimum budget whatever the latent cost says.
    minimum = np.zeros(m.n)
    for kind, dollars in ((_DELIVERY, 12_000.0), (_NEWBORN, 3_000.0), (_NICU, 45_000.0),
                          (_HOSPICE_HOME, 12_000.0), (_HOSPICE_INPATIENT, 15_000.0)):
        np.maximum.at(minimum, episodes.member[episodes.kind == kind], dollars)
    dial = episodes.member[episodes.kind == _DIALYSIS]
    np.add.at(minimum, dial, 7_000.0)
    budget = np.maximum(budget, minimum)
    has_episode = np.bincount(episodes.member, minlength=m.n) > 0
    episode_share = np.where(has_episode, rng.uniform(0.55, 0.85, m.n), 0.0)
    member_weight = _group_sum(episodes.member, weight, m.n)
    episode_budget = (budget * episode_share)[episodes.member] * weight / np.maximum(
        member_weight[episodes.member], 1e-9)
    remaining = budget * (1 - episode_share)

    episode_claims = _episode_claims(car, m, episodes, m.n, rng)
    f_member, f_kind, f_day, f_dx1, f_driver = _forced_events(car, m, rng)
    forced_claims = _event_claims(car, m, f_member, f_kind, f_day, f_dx1, f_driver, rng)
    target = (
        _LINES_PER_YEAR * float(m.member_months.sum()) / 12
        - _expected_claim_lines(episode_claims) - _expected_claim_lines(forced_claims)
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
    used = np.unique(np.concatenate(totals.providers)) if totals.providers else np.zeros(
        0, dtype=np.int64)
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


def _carrier_tables(carrier_id: str, members: int, config: SynthConfig,
                    rng: Rng) -> Iterator[tuple[str, pa.Table]]:
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
    logger.debug("synthesised carrier: %d members, %d claims, %d fills", totals.members,
                 totals.claims, totals.fills)


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _schema_table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)


def generate_carrier(carrier_id: str, members: int, config: SynthConfig,
                     rng: Rng) -> dict[str, pd.DataFrame]:
    """One carrier's tables by name (Arrow-backed frames with the schema's types)."""
    parts: dict[str, list[pa.Table]] = {t.name: [] for t in TABLES}
    for name, table in _carrier_tables(carrier_id, members, config, rng):
        parts[name].append(_plain(table, _schema_table(name)))
    return {name: _frame(pa.concat_tables(tables)) for name, tables in parts.items()}


def carrier_rng(config: SynthConfig, index: int) -> Rng:
    """The generator of the carrier at ``index`` (1-based, as in its id)."""
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(index,)))


def _sizes_rng(config: SynthConfig) -> Rng:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0, 0)))


def write_carriers(out: Path, config: SynthConfig,
                   progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write every carrier to ``out/<carrier id>/<table>.<format>``; return the directories.

    Carriers are made one at a time (large ones block by block) while a background thread
    writes the previous parts, so memory does not grow with the number of members.
    ``progress(done, total)`` is called after each carrier. Parquet files are snappy-compressed
    with plain logical types (no Arrow schema blob, no timestamps); CSV files are written with
    pandas: ISO dates, two-decimal amounts, ``true``/``false``, an empty field for null.
    """
    ids = carrier_ids(config.carriers)
    sizes = carrier_sizes(config.members, config.carriers, _sizes_rng(config))
    directories: list[Path] = []
    with _Writer() as writer:
        for index, (carrier_id, size) in enumerate(zip(ids, sizes, strict=True), start=1):
            directory = out / carrier_id
            directory.mkdir(parents=True, exist_ok=True)
            for table in TABLES:  # no stale tables of the other format
                for suffix in (".parquet", ".csv"):
                    (directory / f"{table.name}{suffix}").unlink(missing_ok=True)
            files: _ParquetTables | _CsvTables = (
                _ParquetTables(directory) if config.file_format == "parquet"
                else _CsvTables(directory)
            )
            for name, table in _carrier_tables(carrier_id, int(size), config,
                                               carrier_rng(config, index)):
                writer.submit(files.write, name, table)
            writer.submit(files.close)
            directories.append(directory)
            if progress is not None:
                writer.wait()
                progress(index, len(ids))
    logger.info("wrote %d synthetic carriers, %d members", len(ids), config.members)
    return directories


class _Writer:
    """Runs file writes in order on one background thread, a few parts behind at most."""

    def __init__(self, backlog: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-writer")
        self._pending: deque[Future[None]] = deque()
        self._backlog = backlog

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        while len(self._pending) >= self._backlog:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(fn, *args))

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _ParquetTables:
    """Appends parts of each table to ``NAME.parquet`` (deterministic bytes)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, name: str, table: pa.Table) -> None:
        table = _plain(table, _schema_table(name))
        writer = self._writers.get(name)
        if writer is None:
            writer = pq.ParquetWriter(
                self._directory / f"{name}.parquet", table.schema, compression="snappy",
                write_statistics=True, store_schema=False,
            )
            self._writers[name] = writer
        writer.write_table(table)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _CsvTables:
    """Appends parts of each table to ``NAME.csv``: ISO dates, money with two decimals,
    booleans ``true``/``false``, an empty field for null."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._started: set[str] = set()

    def write(self, name: str, table: pa.Table) -> None:
        text = pa.table({
            column: pc.fill_null(table.column(column).cast(pa.string()), "")
            for column in table.column_names
        })
        frame = text.to_pandas()
        path = self._directory / f"{name}.csv"
        first = name not in self._started
        frame.to_csv(path, mode="w" if first else "a", header=first, index=False,
                     lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        self._started.add(name)

    def close(self) -> None:
        self._started.clear()


def read_carrier(directory: Path) -> dict[str, pd.DataFrame]:
    """Read a carrier directory written by :func:`write_carriers` back into typed frames."""
    tables: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        schema = arrow_schema(table)
        parquet, text = directory / f"{table.name}.parquet", directory / f"{table.name}.csv"
        if parquet.exists():
            data = pq.read_table(parquet, schema=schema)
        elif text.exists():
            data = pacsv.read_csv(
                text,
                convert_options=pacsv.ConvertOptions(
                    column_types=schema, null_values=[""], strings_can_be_null=True,
                    true_values=["true"], false_values=["false"],
                ),
            ).select(schema.names)
        else:
            continue
        tables[table.name] = _frame(data)
    return tables


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _arrow(frames: Sequence[pd.DataFrame], column: str) -> pa.ChunkedArray:
    chunks = [pa.array(f[column]) for f in frames]
    return pa.chunked_array(
        [c for chunk in chunks for c in (chunk.chunks if isinstance(chunk, pa.ChunkedArray)
                                         else [chunk])],
        type=chunks[0].type,
    )


def _days(values: pa.ChunkedArray) -> IntArray:
    return np.asarray(values.cast(pa.int32()).fill_null(-1).to_numpy(), dtype=np.int64)


def _dollars(values: pa.ChunkedArray) -> FloatArray:
    return np.asarray(values.cast(pa.float64()).fill_null(0.0).to_numpy(), dtype=np.float64)


def _flags(values: pa.ChunkedArray) -> BoolArray:
    return np.asarray(values.fill_null(False).to_numpy(), dtype=np.bool_)


def _equal(values: pa.ChunkedArray, text: str) -> BoolArray:
    return _flags(pc.equal(values, text))


def calibration_report(
    tables_by_carrier: Mapping[str, Mapping[str, pd.DataFrame]],
) -> dict[str, float]:
    """The DESIGN calibration figures measured on generated tables (all carriers pooled).

    The window is the months from January of the first claim's year to the last claim's
    month (at most twelve). Dollar figures use allowed amounts over all claim versions;
    per-member figures cover every member enrolled in the window; claim lines and fills count
    original versions (denied included) per member-year (member months / 12); the claim lag is
    the share of medical paid amount (version 1) paid within 0, 1, 2, 3 and 12 months of the
    service month; the December surgery ratio compares surgical claims (ambulatory surgery
    centre, outpatient surgery, surgical DRG) per member month in December with the other
    months' average.
    """
    carriers = list(tables_by_carrier.values())
    med_frames = [t["medical_claims"] for t in carriers]
    rx_frames = [t["pharmacy_claims"] for t in carriers]
    elig_frames = [t["eligibility"] for t in carriers]

    def med(column: str) -> pa.ChunkedArray:
        return _arrow(med_frames, column)

    def rx(column: str) -> pa.ChunkedArray:
        return _arrow(rx_frames, column)

    claim_month = _month_of(_days(med("claim_start_date")))
    first_month = (int(claim_month.min()) // 12) * 12
    # Lines of a hospital stay may run past December: the window stays within one year.
    last_month = min(int(claim_month.max()), first_month + 11)
    window_start = int(_month_start(np.array([first_month]))[0])
    window_end = int(_month_start(np.array([last_month + 1]))[0]) - 1

    start = np.maximum(_days(_arrow(elig_frames, "enrollment_start_date")), window_start)
    end = _days(_arrow(elig_frames, "enrollment_end_date"))
    end = np.where(end < 0, window_end, np.minimum(end, window_end))
    inside = end >= start
    spans = pa.table({
        "member": _arrow(elig_frames, "member_id").filter(pa.array(inside)),
        "first": start[inside], "last": end[inside],
    })
    enrolled = spans.group_by("member").aggregate([("first", "min"), ("last", "max")])
    member_first = _month_of(enrolled["first_min"].to_numpy()) - first_month
    member_last = _month_of(enrolled["last_max"].to_numpy()) - first_month
    n_months = last_month - first_month + 1
    per_month = np.zeros(n_months + 1)
    np.add.at(per_month, member_first, 1)
    np.add.at(per_month, member_last + 1, -1)
    per_month = np.cumsum(per_month)[:n_months]
    total_mm = float(per_month.sum())
    years = total_mm / 12

    med_allowed, rx_allowed = _dollars(med("allowed_amount")), _dollars(rx("allowed_amount"))
    spend = pa.table({
        "member": pa.chunked_array(med("member_id").chunks + rx("member_id").chunks),
        "allowed": np.concatenate([med_allowed, rx_allowed]),
    }).group_by("member").aggregate([("allowed", "sum")])
    spent = spend.join(enrolled.select(["member"]), "member", join_type="right outer")
    per_member = np.asarray(spent["allowed_sum"].fill_null(0.0).to_numpy(), dtype=np.float64)
    ordered = np.sort(per_member)[::-1]
    total = float(ordered.sum())
    n = len(ordered)

    version = np.asarray(med("claim_version").fill_null(1).to_numpy(), dtype=np.int64)
    original = version == 1
    status = med("claim_status")
    paid_status, denied = _equal(status, "paid"), _equal(status, "denied")
    paid = _dollars(med("paid_amount"))
    lag = _month_of(_days(med("paid_date"))) - claim_month
    lag_base = original & paid_status & (paid > 0)
    paid_base = float(paid[lag_base].sum())

    rx_original = ~_equal(rx("claim_status"), "reversed")
    specialty = _flags(rx("specialty"))
    generic = _flags(rx("generic"))
    rx_paid = _dollars(rx("paid_amount"))
    all_allowed = float(med_allowed.sum()) + float(rx_allowed.sum())
    report = {
        "members": float(n),
        "member_months": total_mm,
        "pmpm_allowed": all_allowed / total_mm,
        "paid_to_allowed": (float(paid.sum()) + float(rx_paid.sum())) / all_allowed,
        "pharmacy_share": float(rx_allowed.sum()) / all_allowed,
        "top1_share": float(ordered[: max(n // 100, 1)].sum()) / total,
        "top5_share": float(ordered[: max(n // 20, 1)].sum()) / total,
        "no_spend_share": float((ordered <= 0).mean()),
        "over_100k_share": float((ordered > 100_000).mean()),
        "medical_lines_per_member_year": float(original.sum()) / years,
        "fills_per_member_year": float(rx_original.sum()) / years,
        "denied_line_share": float(denied[original].mean()),
        "generic_fill_share": float(generic[rx_original].mean()),
        "specialty_fill_share": float(specialty[rx_original].mean()),
        "specialty_spend_share": float(rx_allowed[specialty].sum()) / float(rx_allowed.sum()),
        "mail_fill_share": float(_equal(rx("channel"), "mail")[rx_original].mean()),
    }
    for k in (0, 1, 2, 3, 12):
        report[f"lag_paid_by_month_{k}"] = float(paid[lag_base & (lag <= k)].sum()) / paid_base
    if n_months == 12:
        surgical = _surgical_claim_months(med, original & ~denied, claim_month) - first_month
        counts = np.bincount(surgical[(surgical >= 0) & (surgical < 12)], minlength=12)
        rate = counts / per_month
        report["december_surgery_ratio"] = float(rate[11] / rate[:11].mean())
    return report


def _surgical_claim_months(med: Callable[[str], pa.ChunkedArray], counted: BoolArray,
                           claim_month: IntArray) -> IntArray:
    """Service month of each surgical claim: ASC, outpatient surgery, surgical DRG stay."""
    bill, revenue = med("bill_type"), med("revenue_code")
    surgical_drgs = pa.array(sorted(c for c, kind in drg_types().items() if kind == "P"))
    asc = _flags(pc.starts_with(bill, "83"))
    outpatient = _flags(pc.starts_with(bill, "13")) & (
        _flags(pc.starts_with(revenue, "036")) | _flags(pc.starts_with(revenue, "049")))
    inpatient = _flags(pc.starts_with(bill, "11")) & _flags(
        pc.is_in(med("drg"), value_set=surgical_drgs))
    chosen = pa.array(counted & (asc | outpatient | inpatient))
    claims = pa.table({"claim": med("claim_id").filter(chosen),
                       "month": pa.array(claim_month).filter(chosen)})
    first = claims.group_by("claim").aggregate([("month", "min")])
    return np.asarray(first["month_min"].to_numpy(), dtype=np.int64)
