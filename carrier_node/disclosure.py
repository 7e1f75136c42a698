"""Protect one table on its own (no ledger, no budget): for checks and tools that look at a
single table. The node's full pipeline over a request is :class:`carrier_node.protect.Protector`.
"""

from __future__ import annotations

import datetime as dt

from carrier_node.engine import RawTable
from carrier_node.policy import Policy
from carrier_node.protect import Protector
from fedoversight import catalogue
from fedoversight.domain import QueryTable, RequestSpec
from fedoversight.periods import Period


def protect(raw: RawTable, policy: Policy, period: Period | None = None) -> QueryTable:
    """Primary, dominance and complementary suppression of one table (differencing needs the
    ledger and DP needs the budget, so both are off here)."""
    single = policy.model_copy(update={
        "differencing_guard": False,
        "differential_privacy": policy.differential_privacy.model_copy(update={"enabled": False}),
    })
    now = dt.datetime.now(dt.UTC)
    request = RequestSpec(
        request_id="local", round_id="local", catalogue_version=catalogue.CATALOGUE_VERSION,
        period=period or Period.parse("2000-01"), queries=(raw.query,), issued_at=now,
        expires_at=now, nonce=b"\\0" * 16,
    )
    tables, _ = Protector(single).protect(request, [raw])
    return tables[0]
