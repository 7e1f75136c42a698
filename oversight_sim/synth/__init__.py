"""Synthetic carrier data in the data schema (:mod:`fedoversight.schema`): vectorised (numpy),
calibrated, reproducible.

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

The modules, each importing only those listed before it:

- :mod:`~oversight_sim.synth.arrays`: array types and small numpy helpers;
- :mod:`~oversight_sim.synth.config`: :class:`SynthConfig`;
- :mod:`~oversight_sim.synth.reference`: reference values (states, provider kinds, drug
  classes, conditions, diagnoses, MS-DRGs, the payment lag);
- :mod:`~oversight_sim.synth.templates`: claim templates of encounters and episodes;
- :mod:`~oversight_sim.synth.codes`: code vocabularies and vectorised choices of codes;
- :mod:`~oversight_sim.synth.columns`: Arrow columns and tables in the schema;
- :mod:`~oversight_sim.synth.universe`: the national provider and drug universe;
- :mod:`~oversight_sim.synth.carriers`: carrier ids, sizes, generators and plans;
- :mod:`~oversight_sim.synth.members`: members, enrollment, health and the eligibility table;
- :mod:`~oversight_sim.synth.pharmacy`: fills and the pharmacy_claims table;
- :mod:`~oversight_sim.synth.claims`: medical claims before they have lines;
- :mod:`~oversight_sim.synth.episodes`: expensive episodes of care and their claims;
- :mod:`~oversight_sim.synth.encounters`: ordinary encounters and their claims;
- :mod:`~oversight_sim.synth.medical`: lines, amounts and versions: the medical_claims table;
- :mod:`~oversight_sim.synth.generate`: a carrier's tables, block by block of members;
- :mod:`~oversight_sim.synth.files`: writing carrier directories and reading them back;
- :mod:`~oversight_sim.synth.calibration`: the calibration figures of generated tables.
"""

from __future__ import annotations

from oversight_sim.synth.calibration import calibration_report
from oversight_sim.synth.carriers import carrier_ids, carrier_rng, carrier_sizes
from oversight_sim.synth.columns import arrow_schema
from oversight_sim.synth.config import MIN_CARRIER_MEMBERS, SynthConfig
from oversight_sim.synth.files import read_carrier, write_carriers
from oversight_sim.synth.generate import generate_carrier

__all__ = [
    "MIN_CARRIER_MEMBERS",
    "SynthConfig",
    "arrow_schema",
    "calibration_report",
    "carrier_ids",
    "carrier_rng",
    "carrier_sizes",
    "generate_carrier",
    "read_carrier",
    "write_carriers",
]
