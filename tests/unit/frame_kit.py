"""Small typed tidy frames made by hand, in the columns and dtypes of coordinator.frames, for
testing what is drawn from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

FIXED = ("round_id", "period", "metric", "metric_version", "scope")
TAIL = {
    "statistic": "string",
    "kind": "string",
    "value": "Float64",
    "value_int": "Int64",
    "status": "string",
    "withheld": "boolean",
    "incomplete": "boolean",
    "noise_sd": "Float64",
    "unreliable": "boolean",
    "unreliable_reason": "string",
    "missing_carriers": "Int64",
    "missing_at_most": "Int64",
    "missing_members_at_most": "Int64",
    "carriers_asked": "Int64",
    "carriers_answered": "Int64",
}


def row(
    scope: str,
    statistic: str,
    value: float | None,
    *,
    metric: str = "cost.pmpm",
    kind: str = "figure",
    status: str | None = None,
    noise_sd: float | None = 0.0,
    unreliable: str | None = None,
    incomplete: bool = False,
    round_id: str = "r-20260201000000-aaaaaaaa",
    period: str = "2026-01:2026-03",
    **dims: object,
) -> dict[str, object]:
    """One row; ``value=None`` is a withheld value."""
    withheld = value is None
    integer = kind != "figure" and value is not None
    return {
        "round_id": round_id,
        "period": period,
        "metric": metric,
        "metric_version": 1,
        "scope": scope,
        **dims,
        "statistic": statistic,
        "kind": kind,
        "value": value,
        "value_int": int(value) if integer and value is not None else None,
        "status": status
        or ("withheld" if withheld else "incomplete" if incomplete else "perturbed"),
        "withheld": withheld,
        "incomplete": incomplete,
        "noise_sd": noise_sd,
        "unreliable": unreliable is not None,
        "unreliable_reason": unreliable,
        "missing_carriers": 1 if incomplete else None,
        "missing_at_most": None,
        "missing_members_at_most": 10 if incomplete else None,
        "carriers_asked": 3,
        "carriers_answered": 3,
    }


def frame(rows: Sequence[Mapping[str, object]], dims: Sequence[str] = ("month",)) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {}
    for name in FIXED:
        dtype = "Int64" if name == "metric_version" else "string"
        columns[name] = pd.Series([r[name] for r in rows], dtype=dtype)
    for d in dims:
        values = [r.get(d) for r in rows]
        if d == "month":
            columns[d] = pd.to_datetime(pd.Series(values, dtype=object)).astype("datetime64[ns]")
        else:
            columns[d] = pd.Series(values, dtype="string")
    for name, dtype in TAIL.items():
        columns[name] = pd.Series([r[name] for r in rows], dtype=dtype)
    return pd.DataFrame(columns)
