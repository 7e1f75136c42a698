"""Claim templates: the kinds of ordinary encounters and the claims of expensive episodes.

A template gives a claim's type, who bills it and where, and the lines it may have (each with
a probability, code alternatives, a relative price and a cost-share rule). The index tables at
the end let the vectorised code address templates and kinds by number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

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
    #: Hospital-stay professional claim: one line per day of the stay (see medical._lines).
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
_LAB = (
    "80053:5 85025:5 80061:4 84443:3 81001:2 87086:1 82306:2 80048:2 84153:1 87491:1 "
    "86803:1 82565:1 87880:1 87635:1 82947:1"
)
_SURGERY = "45378:5 45385:3 66984:4 29881:2 43239:3 64483:3 49505:2 47562:1 19120:1 52000:1"

_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "office_visit",
        (
            _Claim(
                _P,
                "pcp",
                pos="11",
                lines=(
                    _Line(1, _EM_OFFICE, weight=1.0, share="copay"),
                    _Line(0.22, "36415", weight=0.05),
                    _Line(0.08, "81002 81003 87880 82947", weight=0.1),
                    _Line(0.07, "90471", weight=0.2, share="none"),
                    _Line(0.07, "90686:3 90715 90732 90651", weight=0.3, share="none"),
                    _Line(0.05, "96372", weight=0.2),
                    _Line(0.05, "J1100 J3420 J1030 J0696", weight=0.1),
                    _Line(0.05, "93000", weight=0.3),
                ),
            ),
        ),
        dx="general",
        freq=(4.0, 4.0, 5.0),
    ),
    _Kind(
        "preventive",
        (
            _Claim(
                _P,
                "pcp",
                pos="11",
                lines=(
                    _Line(
                        1,
                        "99396:3 99395:3 99397:2 99391 99392 99393 99394 99385 99386 G0439",
                        weight=1.4,
                        share="none",
                    ),
                    _Line(0.3, "90471", weight=0.2, share="none"),
                    _Line(0.3, "90686 90715 90651 90750", weight=0.4, share="none"),
                    _Line(0.2, "36415", weight=0.05, share="none"),
                ),
            ),
        ),
        dx="general",
        freq=(1.0, 0.45, 0.55),
    ),
    _Kind(
        "specialist_visit",
        (
            _Claim(
                _P,
                "specialist",
                pos="11",
                lines=(
                    _Line(
                        1,
                        "99214:4 99213:3 99204:2 99215:1 99203:1 99205:1",
                        weight=1.4,
                        share="copay",
                    ),
                    _Line(0.12, "71046 73562 73030 76700 72100", weight=0.6),
                    _Line(0.10, "93306", weight=2.0),
                    _Line(0.08, "93000", weight=0.3),
                    _Line(0.05, "88305", weight=0.8),
                ),
            ),
        ),
        dx="general",
        freq=(0.6, 1.5, 2.5),
        tier=(0.5, 1.0, 1.4, 1.6),
    ),
    _Kind(
        "telehealth",
        (
            _Claim(
                _P,
                "pcp",
                pos="02:1 10:2",
                lines=(_Line(1, "99213:4 99214:2 99212:2", weight=0.9, share="copay"),),
            ),
        ),
        dx="general",
        freq=(0.5, 1.2, 0.8),
    ),
    _Kind(
        "emergency",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                other="emergency",
                lines=(
                    _Line(1, _EM_ED, "0450:9 0451 0459", weight=9.0, share="copay"),
                    _Line(0.6, "80053 80048", "0300:3 0301", weight=0.6),
                    _Line(0.5, "85025", "0305 0300", weight=0.4),
                    _Line(0.4, "71046 73610 72100", "0320:4 0324", weight=1.4),
                    _Line(0.2, "70450 74177 71250", "0350 0351 0352", weight=5.0),
                    _Line(0.5, "", "0250", weight=0.6),
                    _Line(0.2, "J1885 J2405 J1100", "0636", weight=0.5),
                    _Line(0.3, "93005", "0730", weight=0.5),
                    _Line(0.1, "", "0981", weight=1.0),
                ),
            ),
            _Claim(
                _P,
                "emergency",
                pos="23",
                other="hospital",
                lines=(
                    _Line(1, _EM_ED, weight=2.4),
                    _Line(0.3, "93010", weight=0.2),
                    _Line(0.15, "71046", weight=0.2),
                ),
            ),
        ),
        dx="acute",
        freq=(0.16, 0.17, 0.26),
        tier=(0.3, 1.0, 1.6, 2.0),
    ),
    _Kind(
        "urgent_care",
        (
            _Claim(
                _P,
                "pcp",
                pos="20",
                other="urgent",
                lines=(
                    _Line(1, "99213:3 99214:2 99203:2 S9083", weight=1.4, share="copay"),
                    _Line(0.3, "87880 87635 87804", weight=0.2),
                    _Line(0.15, "81002", weight=0.1),
                    _Line(0.1, "71046 73610", weight=0.6),
                ),
            ),
        ),
        dx="injury",
        freq=(0.3, 0.25, 0.15),
    ),
    _Kind(
        "urgent_care_hospital",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "99213 99214", "0456", weight=1.8, share="copay"),
                    _Line(0.3, "87880", "0300", weight=0.2),
                ),
            ),
        ),
        dx="injury",
        freq=(0.05, 0.05, 0.04),
    ),
    _Kind(
        "lab",
        (
            _Claim(
                _P,
                "lab",
                pos="81",
                lines=(
                    _Line(1, _LAB, weight=0.25),
                    _Line(0.8, _LAB, weight=0.25),
                    _Line(0.6, _LAB, weight=0.25),
                    _Line(0.4, _LAB, weight=0.25),
                    _Line(0.25, _LAB, weight=0.25),
                    _Line(0.15, _LAB, weight=0.25),
                ),
            ),
        ),
        dx="lab",
        freq=(0.7, 1.8, 2.6),
    ),
    _Kind(
        "lab_hospital",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="141",
                lines=(
                    _Line(1, _LAB, "0300:3 0301 0305 0306", weight=0.3),
                    _Line(0.6, _LAB, "0300:3 0301 0305 0306", weight=0.3),
                    _Line(0.3, _LAB, "0300 0302 0310", weight=0.3),
                ),
            ),
        ),
        dx="lab",
        freq=(0.15, 0.4, 0.6),
    ),
    _Kind(
        "lab_outpatient",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, _LAB, "0300:3 0301 0305", weight=0.3),
                    _Line(0.5, _LAB, "0300 0306 0307", weight=0.3),
                    _Line(0.2, "36415", "0300", weight=0.05),
                ),
            ),
        ),
        dx="lab",
        freq=(0.15, 0.35, 0.5),
    ),
    _Kind(
        "imaging_office",
        (
            _Claim(
                _P,
                "radiologist",
                pos="11",
                lines=(
                    _Line(
                        1,
                        "71046:4 73562:2 73030:2 72100:2 76700:2 76856 77080:2 72148 73721 "
                        "76536 78452",
                        weight=2.0,
                    ),
                    _Line(0.15, "71046 73560", weight=0.6),
                ),
            ),
        ),
        dx="imaging",
        freq=(0.1, 0.35, 0.5),
        tier=(0.5, 1.0, 1.4, 1.6),
    ),
    _Kind(
        "xray_outpatient",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "71046:3 73562 73030 72100 73610", "0320:3 0324", weight=1.5),
                    _Line(0.15, "76700 76856 76536", "0402", weight=2.5),
                    _Line(0.05, "78815", "0404", weight=12.0),
                ),
            ),
            _Claim(
                _P,
                "radiologist",
                pos="22",
                other="hospital",
                lines=(_Line(1, "71046 73562 72100", weight=0.3),),
            ),
        ),
        dx="imaging",
        freq=(0.1, 0.25, 0.4),
    ),
    _Kind(
        "ct_outpatient",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "74177:3 70450:2 71250:2 74176 71260", "0350:3 0351 0352", weight=8.0),
                    _Line(0.3, "Q9967", "0636 0255", weight=0.3),
                ),
            ),
            _Claim(
                _P,
                "radiologist",
                pos="22",
                other="hospital",
                lines=(_Line(1, "74177 70450 71250", weight=0.8),),
            ),
        ),
        dx="imaging",
        freq=(0.03, 0.1, 0.2),
        tier=(0.2, 0.8, 1.6, 2.5),
    ),
    _Kind(
        "mri_outpatient",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(
                        1, "72148:3 73721:2 70553:2 72141 73221", "0610:3 0611 0612", weight=11.0
                    ),
                ),
            ),
            _Claim(
                _P,
                "radiologist",
                pos="22",
                other="hospital",
                lines=(_Line(1, "72148 73721 70553", weight=1.0),),
            ),
        ),
        dx="imaging",
        freq=(0.02, 0.08, 0.1),
        tier=(0.2, 0.8, 1.6, 2.5),
    ),
    _Kind(
        "mammogram_office",
        (
            _Claim(
                _P,
                "radiologist",
                pos="11",
                lines=(
                    _Line(1, "77067:8 77066 77065", weight=1.8, share="none"),
                    _Line(0.6, "77063:8 77061 77062", weight=0.5, share="none"),
                ),
            ),
        ),
        dx="screen_mammo",
    ),
    _Kind(
        "mammogram_hospital",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "77067:8 77066 77065", "0403:3 0401", weight=2.0, share="none"),
                    _Line(0.6, "77063:8 77061 77062", "0403", weight=0.6, share="none"),
                ),
            ),
        ),
        dx="screen_mammo",
    ),
    _Kind(
        "asc_surgery",
        (
            _Claim(
                _I,
                "asc",
                bill_type="831",
                other="surgeon",
                lines=(
                    _Line(1, _SURGERY, "0490", weight=14.0),
                    _Line(0.6, "", "0250", weight=0.5),
                    _Line(0.5, "", "0370", weight=1.5),
                    _Line(0.3, "", "0272", weight=0.6),
                    _Line(0.3, "", "0710", weight=1.0),
                ),
            ),
            _Claim(
                _P,
                "surgeon",
                pos="24",
                other="asc",
                lines=(
                    _Line(1, _SURGERY, weight=4.0),
                    _Line(0.2, "88305", weight=0.8),
                ),
            ),
            _Claim(
                _P,
                "anesthesia",
                pos="24",
                other="asc",
                lines=(_Line(1, "00810:3 00142:2 01400 00790", weight=1.5),),
            ),
        ),
        dx="surgery",
        freq=(0.02, 0.07, 0.14),
        tier=(0.1, 0.7, 2.0, 2.5),
        elective=True,
    ),
    _Kind(
        "outpatient_surgery",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                other="surgeon",
                lines=(
                    _Line(1, _SURGERY, "0360:3 0361 0490", weight=16.0),
                    _Line(0.6, "", "0250", weight=0.6),
                    _Line(0.5, "", "0370", weight=2.0),
                    _Line(0.4, "", "0710", weight=1.2),
                    _Line(0.3, "80048", "0300", weight=0.3),
                    _Line(0.2, "C1713", "0278", weight=3.0),
                ),
            ),
            _Claim(
                _P, "surgeon", pos="22", other="hospital", lines=(_Line(1, _SURGERY, weight=4.0),)
            ),
        ),
        dx="surgery",
        freq=(0.02, 0.05, 0.1),
        tier=(0.1, 0.6, 2.0, 2.6),
        elective=True,
    ),
    _Kind(
        "observation",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                other="hospitalist",
                lines=(
                    _Line(1, "G0378", "0762:3 0760", weight=7.0),
                    _Line(0.7, "80053", "0300", weight=0.5),
                    _Line(0.5, "", "0250", weight=0.8),
                    _Line(0.3, "93306", "0480", weight=2.0),
                ),
            ),
            _Claim(
                _P,
                "hospitalist",
                pos="22",
                other="hospital",
                lines=(_Line(1, "99221 99222 99223", weight=1.6),),
            ),
        ),
        dx="acute",
        freq=(0.005, 0.02, 0.06),
        tier=(0.0, 0.5, 1.5, 3.0),
    ),
    _Kind(
        "infusion",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "J9271 J1745 J2505 J0897 J9035 J1569 J9299", "0636", weight=30.0),
                    _Line(1, "96413:2 96365", "0260 0335", weight=2.0),
                    _Line(0.5, "", "0250 0258", weight=0.5),
                    _Line(0.4, "85025", "0300", weight=0.3),
                ),
            ),
        ),
        dx="oncology",
        freq=(0.001, 0.01, 0.03),
        tier=(0.0, 0.1, 1.0, 4.0),
    ),
    _Kind(
        "clinic_outpatient",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "G0463", "0510:3 0517", weight=2.0),
                    _Line(0.3, "80053", "0300", weight=0.3),
                ),
            ),
            _Claim(
                _P,
                "specialist",
                pos="22:3 19",
                other="hospital",
                lines=(_Line(1, "99213 99214 99204", weight=1.2, share="copay"),),
            ),
        ),
        dx="general",
        freq=(0.1, 0.2, 0.3),
    ),
    _Kind(
        "pt_outpatient",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "97110", "0420 0424", weight=0.8),
                    _Line(0.8, "97140", "0420", weight=0.7),
                    _Line(0.5, "97530", "0430 0434", weight=0.7),
                    _Line(0.25, "92507", "0440 0444", weight=0.8),
                ),
            ),
        ),
        dx="therapy",
        freq=(0.03, 0.1, 0.12),
    ),
    _Kind(
        "pt_office",
        (
            _Claim(
                _P,
                "therapist",
                pos="11",
                lines=(
                    _Line(1, "97110", weight=0.6, share="copay"),
                    _Line(0.9, "97140", weight=0.5),
                    _Line(0.6, "97530 97112", weight=0.5),
                    _Line(0.15, "97161 97162", weight=0.9),
                ),
            ),
        ),
        dx="therapy",
        freq=(0.05, 0.25, 0.3),
    ),
    _Kind(
        "pt_clinic",
        (
            _Claim(
                _P,
                "therapist",
                pos="49",
                lines=(
                    _Line(1, "97110", weight=0.6),
                    _Line(0.8, "97140 97530", weight=0.5),
                ),
            ),
        ),
        dx="therapy",
        freq=(0.02, 0.1, 0.1),
    ),
    _Kind(
        "rehab_outpatient",
        (
            _Claim(
                _P,
                "therapist",
                pos="62",
                lines=(
                    _Line(1, "97110 97530", weight=0.7),
                    _Line(0.7, "97116 97112", weight=0.6),
                ),
            ),
        ),
        dx="rehab",
        freq=(0.005, 0.02, 0.04),
    ),
    _Kind(
        "office_surgery",
        (
            _Claim(
                _P,
                "specialist",
                pos="11",
                lines=(
                    _Line(
                        1, "11102:2 17110:2 20610:3 10060 69210:2 12001 17000:2 11721", weight=1.3
                    ),
                    _Line(0.3, "88305", weight=0.8),
                ),
            ),
        ),
        dx="general",
        freq=(0.05, 0.15, 0.3),
    ),
    _Kind(
        "office_other",
        (
            _Claim(
                _P,
                "pcp",
                pos="11",
                lines=(
                    _Line(1, "96372:2 G0442 99401 G0444 90471", weight=0.4),
                    _Line(0.5, "J1100 J3420 J0696 90686", weight=0.2),
                ),
            ),
        ),
        dx="general",
        freq=(0.3, 0.2, 0.3),
    ),
    _Kind(
        "cardiology",
        (
            _Claim(
                _P,
                "specialist",
                pos="11",
                lines=(
                    _Line(1, "99214:3 99213 99204", weight=1.3, share="copay"),
                    _Line(0.4, "93306", weight=2.2),
                    _Line(0.4, "93000", weight=0.3),
                    _Line(0.1, "93224", weight=1.0),
                ),
            ),
        ),
        dx="acute",
        freq=(0.01, 0.15, 0.5),
        tier=(0.3, 1.0, 1.5, 1.8),
    ),
    _Kind(
        "ambulance",
        (
            _Claim(
                _P,
                "ambulance",
                pos="41",
                lines=(
                    _Line(1, "A0427:2 A0429:3 A0433", weight=5.0),
                    _Line(1, "A0425", weight=1.0),
                ),
            ),
        ),
        dx="ambulance",
        freq=(0.01, 0.02, 0.07),
        tier=(0.0, 0.5, 1.5, 3.0),
    ),
    _Kind(
        "air_ambulance",
        (
            _Claim(
                _P,
                "ambulance",
                pos="42",
                lines=(
                    _Line(1, "A0431 A0430", weight=60.0),
                    _Line(1, "A0436 A0435", weight=8.0),
                ),
            ),
        ),
        dx="ambulance",
        freq=(0.0005, 0.0008, 0.0015),
        tier=(0.0, 0.0, 1.0, 4.0),
    ),
    _Kind(
        "ambulance_hospital",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "A0429 A0427", "0540", weight=5.0),
                    _Line(0.8, "A0425", "0540", weight=1.0),
                ),
            ),
        ),
        dx="ambulance",
        freq=(0.002, 0.004, 0.01),
        tier=(0.0, 0.5, 1.5, 3.0),
    ),
    _Kind(
        "dme",
        (
            _Claim(
                _P,
                "dme",
                pos="12",
                lines=(
                    _Line(
                        1,
                        "E0601:3 E0114:2 E1390:2 E0260 K0001 E0470 L3908:2 E0143 L1810",
                        weight=3.0,
                    ),
                    _Line(0.3, "E0562 E1392 K0195 L0650", weight=1.0),
                ),
            ),
        ),
        dx="dme",
        freq=(0.01, 0.04, 0.12),
        tier=(0.2, 1.0, 1.5, 2.0),
    ),
    _Kind(
        "dme_hospital",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(_Line(1, "E0114 L3908 E0143", "0290 0291 0274", weight=2.0),),
            ),
        ),
        dx="dme",
        freq=(0.002, 0.005, 0.01),
    ),
    _Kind(
        "home_visit",
        (
            _Claim(
                _P,
                "pcp",
                pos="12",
                lines=(_Line(1, "99347 99348 99349 99350", weight=1.5, share="copay"),),
            ),
        ),
        dx="elderly",
        freq=(0.0, 0.005, 0.05),
    ),
    _Kind(
        "nursing_facility_visit",
        (
            _Claim(
                _P, "pcp", pos="32:3 31", lines=(_Line(1, "99307 99308 99309 99310", weight=1.2),)
            ),
        ),
        dx="elderly",
        freq=(0.0, 0.002, 0.08),
    ),
    _Kind(
        "other_place",
        (
            _Claim(
                _P,
                "pcp",
                pos="99:2 03 17 15",
                lines=(_Line(1, "99213 99212 90471", weight=0.9, share="copay"),),
            ),
        ),
        dx="general",
        freq=(0.04, 0.02, 0.01),
    ),
    _Kind(
        "home_health",
        (
            _Claim(
                _I,
                "hha",
                bill_type="329:4 322 332 342",
                lines=(
                    _Line(1, "", "0023", weight=12.0),
                    _Line(1, "G0299", "0551", weight=2.0),
                    _Line(0.8, "G0151", "0421", weight=2.0),
                    _Line(0.4, "G0152", "0431", weight=1.5),
                ),
            ),
        ),
        dx="elderly",
        freq=(0.0, 0.003, 0.03),
        tier=(0.0, 0.2, 1.0, 3.0),
        days=30,
    ),
    # Condition-driven encounters (never sampled; see encounters._FORCED).
    _Kind(
        "diabetes_visit",
        (
            _Claim(
                _P,
                "pcp",
                pos="11",
                lines=(
                    _Line(1, "99214:3 99213:2", weight=1.1, share="copay"),
                    _Line(0.25, "82947 82962", weight=0.1),
                    _Line(0.15, "2028F 2022F", weight=0.0),
                ),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "hba1c_lab",
        (
            _Claim(
                _P,
                "lab",
                pos="81",
                lines=(
                    _Line(1, "83036:19 83037", weight=0.25),
                    _Line(0.7, "80053 80048", weight=0.25),
                    _Line(0.5, "80061", weight=0.25),
                    _Line(0.3, "82043", weight=0.2),
                ),
            ),
        ),
        dx="lab",
    ),
    _Kind(
        "psych_office",
        (
            _Claim(
                _P,
                "psych",
                pos="11",
                lines=(_Line(1, "90834:3 90837:3 90832 90791", weight=1.3, share="copay"),),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "psych_telehealth",
        (
            _Claim(
                _P,
                "psych",
                pos="10:3 02",
                lines=(_Line(1, "90834:3 90837:2 90832", weight=1.2, share="copay"),),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "psych_community",
        (
            _Claim(
                _P,
                "psych",
                pos="53",
                lines=(
                    _Line(1, "90834 90837 90853 H0031", weight=1.1),
                    _Line(0.3, "H2011 90785", weight=0.4),
                ),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "psych_partial",
        (
            _Claim(
                _P,
                "psych",
                pos="52",
                lines=(
                    _Line(1, "90853 H0035", weight=3.0),
                    _Line(0.6, "90837", weight=1.0),
                ),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "psych_hospital_outpatient",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "90834 90853 90791", "0900 0914:2 0915", weight=2.0),
                    _Line(0.3, "90837", "0914", weight=1.0),
                ),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "substance_outpatient",
        (
            _Claim(
                _P,
                "substance",
                pos="57",
                lines=(
                    _Line(1, "H0004:3 H0005:2 H0001 99408", weight=1.0),
                    _Line(0.4, "H0004 80305", weight=0.4),
                ),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "opioid_treatment",
        (
            _Claim(
                _P,
                "substance",
                pos="58",
                lines=(
                    _Line(1, "H0020", weight=0.8),
                    _Line(0.8, "H0020", weight=0.8),
                    _Line(0.6, "H0020", weight=0.8),
                    _Line(0.4, "H0020", weight=0.8),
                ),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "substance_residential",
        (_Claim(_P, "substance", pos="55", lines=(_Line(1, "H0018 H0019", weight=12.0),)),),
        dx="general",
    ),
    _Kind(
        "hiv_visit",
        (
            _Claim(
                _P,
                "specialist",
                pos="11",
                lines=(_Line(1, "99214:3 99215", weight=1.4, share="copay"),),
            ),
            _Claim(
                _P,
                "lab",
                pos="81",
                lines=(
                    _Line(1, "87536", weight=1.0),
                    _Line(0.8, "86361", weight=0.6),
                    _Line(0.5, "80053", weight=0.25),
                ),
            ),
        ),
        dx="general",
    ),
    _Kind(
        "prenatal_visit",
        (
            _Claim(
                _P,
                "obgyn",
                pos="11",
                lines=(
                    _Line(1, "99213:3 99214", weight=1.1, share="none"),
                    _Line(0.3, "76805 76815 76817", weight=2.0, share="none"),
                    _Line(0.3, "81002 87086 86900", weight=0.15, share="none"),
                ),
            ),
        ),
        dx="pregnancy",
    ),
    _Kind(
        "oncology_infusion",
        (
            _Claim(
                _I,
                "hospital",
                bill_type="131",
                lines=(
                    _Line(1, "J9271 J9035 J9299 J9306 J2505", "0636", weight=40.0),
                    _Line(1, "96413:3 96415", "0335 0260", weight=2.5),
                    _Line(0.6, "85025", "0300", weight=0.3),
                ),
            ),
            _Claim(
                _P,
                "specialist",
                pos="22",
                other="hospital",
                lines=(_Line(1, "99214 99215", weight=1.4),),
            ),
        ),
        dx="oncology",
    ),
    _Kind(
        "nephrology_visit",
        (
            _Claim(
                _P,
                "nephrology",
                pos="11",
                lines=(_Line(1, "99214 99213", weight=1.3, share="copay"),),
            ),
        ),
        dx="general",
    ),
)
_KIND = {k.name: i for i, k in enumerate(_KINDS)}

# Episode claim templates (stays and other expensive episodes).
_EPISODE_CLAIMS: dict[str, _Claim] = {
    "stay_facility": _Claim(
        _I,
        "hospital",
        bill_type="111",
        other="hospitalist",
        lines=(
            _Line(1, "", "0120:5 0110:2 0121", weight=10.0),
            _Line(0.2, "", "0200 0206", weight=8.0),
            _Line(0.9, "", "0250", weight=1.5),
            _Line(0.3, "", "0258 0636", weight=1.0),
            _Line(0.8, "", "0300 0301", weight=1.0),
            _Line(0.5, "", "0320 0350", weight=1.0),
            _Line(0.35, "", "0450", weight=1.2),
            _Line(0.4, "", "0270 0272", weight=0.8),
            _Line(0.3, "", "0410 0730", weight=0.5),
        ),
    ),
    "surgical_facility": _Claim(
        _I,
        "hospital",
        bill_type="111",
        other="surgeon",
        lines=(
            _Line(1, "", "0120:5 0110:2 0121", weight=8.0),
            _Line(1, "", "0360", weight=9.0),
            _Line(0.9, "", "0370", weight=2.0),
            _Line(0.9, "", "0250", weight=1.5),
            _Line(0.6, "", "0278", weight=4.0),
            _Line(0.7, "", "0300", weight=0.8),
            _Line(0.5, "", "0710", weight=1.0),
            _Line(0.4, "", "0420", weight=0.8),
        ),
    ),
    "delivery_facility": _Claim(
        _I,
        "hospital",
        bill_type="111",
        other="obgyn",
        lines=(
            _Line(1, "", "0112:2 0122", weight=6.0),
            _Line(1, "", "0720 0722", weight=5.0),
            _Line(0.8, "", "0250", weight=0.8),
            _Line(0.6, "", "0300", weight=0.5),
            _Line(0.4, "", "0370", weight=1.0),
        ),
    ),
    "newborn_facility": _Claim(
        _I,
        "hospital",
        bill_type="111",
        other="pcp",
        lines=(
            _Line(1, "", "0170 0171", weight=4.0),
            _Line(0.6, "", "0300", weight=0.4),
            _Line(0.4, "", "0250", weight=0.2),
        ),
    ),
    "nicu_facility": _Claim(
        _I,
        "hospital",
        bill_type="111",
        other="pcp",
        lines=(
            _Line(1, "", "0174 0173", weight=20.0),
            _Line(0.9, "", "0250", weight=2.0),
            _Line(0.9, "", "0300", weight=1.5),
            _Line(0.5, "", "0320", weight=0.8),
            _Line(0.5, "", "0410", weight=1.0),
        ),
    ),
    "psych_facility": _Claim(
        _I,
        "psych_hospital",
        bill_type="111",
        other="psych",
        lines=(
            _Line(1, "", "0114 0124", weight=10.0),
            _Line(0.7, "", "0250", weight=0.8),
            _Line(0.5, "", "0300", weight=0.4),
            _Line(0.5, "", "0900 0914", weight=1.0),
        ),
    ),
    "substance_facility": _Claim(
        _I,
        "hospital",
        bill_type="111",
        other="substance",
        lines=(
            _Line(1, "", "0116 0126", weight=10.0),
            _Line(0.7, "", "0250", weight=0.8),
            _Line(0.6, "", "0300", weight=0.6),
            _Line(0.4, "", "0944 0945", weight=1.0),
        ),
    ),
    "rehab_facility": _Claim(
        _I,
        "rehab_hospital",
        bill_type="111",
        other="therapist",
        lines=(
            _Line(1, "", "0118 0128", weight=10.0),
            _Line(0.9, "", "0420 0424", weight=2.0),
            _Line(0.8, "", "0430 0434", weight=1.5),
            _Line(0.5, "", "0250", weight=0.6),
            _Line(0.3, "", "0440", weight=0.8),
        ),
    ),
    "stay_hospitalist": _Claim(_P, "hospitalist", pos="21", other="hospital", daily=True, lines=()),
    "psych_attending": _Claim(_P, "psych", pos="51", other="psych_hospital", daily=True, lines=()),
    "rehab_attending": _Claim(
        _P, "therapist", pos="61", other="rehab_hospital", daily=True, lines=()
    ),
    "surgeon_inpatient": _Claim(
        _P,
        "surgeon",
        pos="21",
        other="hospital",
        lines=(
            _Line(1, "", weight=6.0),  # the DRG's procedure, filled in by episodes._episode_claims
            _Line(0.6, "01402 00790 00670 01480", weight=1.5),
        ),
    ),
    "obstetric_delivery": _Claim(
        _P,
        "obgyn",
        pos="21",
        other="hospital",
        lines=(
            _Line(1, "59400:2 59409 59510 59514", weight=5.0),
            _Line(0.5, "01967", weight=1.5),
        ),
    ),
    "newborn_care": _Claim(
        _P,
        "pcp",
        pos="21",
        other="hospital",
        lines=(
            _Line(1, "99460 99462 99238", weight=1.0),
            _Line(0.4, "99462", weight=0.6),
        ),
    ),
    "snf_facility": _Claim(
        _I,
        "snf",
        bill_type="211:4 212",
        lines=(
            _Line(1, "", "0120:2 0191 0022", weight=10.0),
            _Line(0.7, "", "0250", weight=1.0),
            _Line(0.8, "97110", "0420", weight=2.0),
            _Line(0.6, "97535", "0430", weight=1.5),
            _Line(0.3, "", "0300", weight=0.5),
        ),
    ),
    "snf_visit": _Claim(
        _P,
        "pcp",
        pos="31",
        other="snf",
        lines=(
            _Line(1, "99304 99305 99306", weight=0.4),
            _Line(0.6, "99308 99309", weight=0.3),
        ),
    ),
    "home_health_episode": _Claim(
        _I,
        "hha",
        bill_type="329:4 322",
        lines=(
            _Line(1, "", "0023", weight=6.0),
            _Line(1, "G0299", "0551", weight=2.0),
            _Line(0.8, "G0151", "0421", weight=2.0),
            _Line(0.4, "G0152", "0431", weight=1.5),
        ),
    ),
    "hospice_home": _Claim(
        _I,
        "hospice",
        bill_type="811:3 812 813",
        lines=(
            _Line(1, "Q5001", "0651", weight=10.0),
            _Line(0.5, "Q5001", "0657", weight=1.0),
        ),
    ),
    "hospice_inpatient": _Claim(
        _I,
        "hospice",
        bill_type="821:3 822",
        lines=(
            _Line(1, "Q5006", "0656 0655", weight=10.0),
            _Line(0.3, "", "0657", weight=1.0),
        ),
    ),
    "dialysis_facility": _Claim(
        _I,
        "dialysis",
        bill_type="721:4 722",
        other="nephrology",
        lines=(
            _Line(1, "90999", "0821", weight=4.0),
            _Line(1, "90999", "0821", weight=4.0),
            _Line(1, "90999", "0821", weight=4.0),
            _Line(0.8, "J0887 Q5106", "0634 0635", weight=2.0),
            _Line(0.6, "82310", "0300", weight=0.3),
        ),
    ),
    "dialysis_monthly": _Claim(
        _P,
        "nephrology",
        pos="65",
        other="dialysis",
        lines=(_Line(1, "90960 90961 90962", weight=2.0),),
    ),
}

#: Every claim template, kinds' claims first, then the episodes'.
_TEMPLATES: tuple[_Claim, ...] = (*(c for k in _KINDS for c in k.claims), *_EPISODE_CLAIMS.values())
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
