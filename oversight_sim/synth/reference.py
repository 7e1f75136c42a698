"""Reference values the generator draws from: states and their weights, provider kinds, drug
classes, members' conditions, diagnosis pools, the MS-DRGs of stays and the claim payment lag."""

from __future__ import annotations

import numpy as np

#: State, relative weight (population, with the federal workforce's tilt to DC, MD and VA).
_STATES: tuple[tuple[str, float], ...] = (
    ("CA", 39.5),
    ("TX", 29.1),
    ("FL", 21.5),
    ("NY", 20.2),
    ("PA", 13.0),
    ("IL", 12.8),
    ("OH", 11.8),
    ("GA", 10.7),
    ("NC", 10.4),
    ("MI", 10.1),
    ("NJ", 9.3),
    ("VA", 17.2),
    ("WA", 7.7),
    ("AZ", 7.2),
    ("MA", 7.0),
    ("TN", 6.9),
    ("IN", 6.8),
    ("MD", 12.4),
    ("MO", 6.2),
    ("WI", 5.9),
    ("CO", 5.8),
    ("MN", 5.7),
    ("SC", 5.1),
    ("AL", 5.0),
    ("LA", 4.7),
    ("KY", 4.5),
    ("OR", 4.2),
    ("OK", 4.0),
    ("CT", 3.6),
    ("UT", 3.3),
    ("IA", 3.2),
    ("NV", 3.1),
    ("AR", 3.0),
    ("MS", 3.0),
    ("KS", 2.9),
    ("NM", 2.1),
    ("NE", 2.0),
    ("ID", 1.8),
    ("WV", 1.8),
    ("HI", 1.5),
    ("NH", 1.4),
    ("ME", 1.4),
    ("RI", 1.1),
    ("MT", 1.1),
    ("DE", 1.0),
    ("SD", 0.9),
    ("ND", 0.8),
    ("AK", 0.7),
    ("DC", 4.2),
    ("VT", 0.6),
    ("WY", 0.6),
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
    (
        "specialist",
        "1",
        (
            "207X00000X",
            "207N00000X",
            "207RC0000X",
            "207RG0100X",
            "207W00000X",
            "207Y00000X",
            "207RE0101X",
        ),
        8000,
    ),
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
    "antidiabetic": 0.24,
    "statin": 0.15,
    "antihypertensive": 0.15,
    "antidepressant": 0.17,
    "specialty biologic": 0.25,
    "opioid analgesic": 0.15,
    "antibiotic": 0.15,
    "other": 0.19,
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
    "general": (
        "Z0000",
        "J069",
        "M545",
        "R51",
        "K219",
        "J029",
        "N390",
        "R1084",
        "M25561",
        "L309",
        "H6590",
        "Z23",
        "R05",
        "J0190",
        "M79604",
        "R6883",
        "K5900",
        "Z1211",
    ),
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
    "secondary": (
        "Z7984",
        "Z87891",
        "E669",
        "Z6830",
        "R739",
        "Z9181",
        "Z7982",
        "Z8249",
        "Z7901",
        "Z90049",
        "M797",
        "K5900",
        "Z8673",
    ),
}

#: MS-DRGs used for stays (checked against the shipped code list).
_DRG_MEDICAL = (
    "871",
    "872",
    "291",
    "292",
    "190",
    "194",
    "193",
    "392",
    "603",
    "683",
    "690",
    "313",
    "065",
    "064",
    "378",
    "638",
    "637",
    "812",
    "948",
    "917",
    "202",
    "309",
    "282",
)
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
    "871": "A419",
    "872": "A419",
    "291": "I5023",
    "292": "I5033",
    "190": "J441",
    "194": "J189",
    "193": "J189",
    "392": "K5290",
    "603": "L03115",
    "683": "N179",
    "690": "N390",
    "313": "R079",
    "065": "I63512",
    "064": "I63412",
    "378": "K922",
    "638": "E1165",
    "637": "E1110",
    "812": "D649",
    "948": "R55",
    "917": "T391X1A",
    "202": "J4541",
    "309": "I4891",
    "282": "I214",
    "470": "M1711",
    "460": "M4316",
    "743": "D259",
    "621": "E6601",
    "483": "M75121",
    "330": "C189",
    "322": "I2510",
    "254": "I70213",
    "419": "K8010",
    "352": "K4090",
    "807": "O80",
    "806": "O80",
    "805": "O80",
    "798": "O80",
    "796": "O80",
    "768": "O80",
    "788": "O82",
    "787": "O82",
    "786": "O82",
    "785": "O82",
    "784": "O82",
    "783": "O82",
    "832": "O2690",
    "833": "O2690",
    "817": "O0010",
    "795": "Z3800",
    "790": "P0730",
    "791": "P0734",
    "792": "P0737",
    "793": "P220",
    "794": "P599",
    "885": "F200",
    "881": "F332",
    "882": "F410",
    "880": "F4320",
    "884": "F0390",
    "897": "F1020",
    "896": "F1120",
    "895": "F1020",
    "894": "F1120",
    "945": "I69351",
    "946": "Z5189",
}
#: Surgeon's procedure by surgical DRG.
_DRG_CPT = {
    "470": "27447",
    "460": "22633",
    "743": "58571",
    "621": "43644",
    "483": "23472",
    "330": "44140",
    "322": "92928",
    "254": "35656",
    "419": "47562",
    "352": "49505",
}

# Claim lag: share of a claim's payments made 0, 1, ..., 12 months after the service month.
_LAG = np.array(
    [0.63, 0.225, 0.075, 0.03, 0.015, 0.01, 0.006, 0.004, 0.003, 0.002, 0.002, 0.002, 0.001]
)
_LAG = _LAG / _LAG.sum()
