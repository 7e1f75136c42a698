"""Operator-API messages <-> coordinator types (the coordinator's edge for protobuf)."""

from __future__ import annotations

import datetime as dt
import math

from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.combine import CombinedCell, FigureValue, ScopedTable
from coordinator.schedule import Revision
from coordinator.store import CarrierRound, CarrierRoundState, RoundRecord, RoundState
from fedoversight import catalogue, wire
from fedoversight.domain import RequestSpec, Status
from fedoversight.v1 import operator_pb2, types_pb2

_ROUND_STATE = {s: getattr(operator_pb2, f"ROUND_STATE_{s.name}") for s in RoundState}
_ROUND_STATE_BACK = {v: k for k, v in _ROUND_STATE.items()}
_CARRIER_STATE = {
    s: getattr(operator_pb2, f"CARRIER_ROUND_STATE_{s.name}") for s in CarrierRoundState
}
_CARRIER_STATE_BACK = {v: k for k, v in _CARRIER_STATE.items()}


def ts(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


def round_state_from_pb(value: int) -> RoundState:
    return _ROUND_STATE_BACK[value]


def carrier_state_from_pb(value: int) -> CarrierRoundState:
    return _CARRIER_STATE_BACK[value]


def summary_to_pb(
    record: RoundRecord, request: RequestSpec, carriers: list[CarrierRound]
) -> operator_pb2.RoundSummary:
    """The round's summary; ``request`` is its request (``record.request_bytes`` decoded)."""
    return operator_pb2.RoundSummary(
        round_id=record.round_id,
        state=_ROUND_STATE[record.state],
        period=wire.period_to_pb(request.period),
        queries=[wire.query_to_pb(q) for q in request.queries],
        carriers_asked=len(carriers),
        carriers_answered=sum(1 for c in carriers if c.state is CarrierRoundState.ANSWERED),
        created_at=ts(record.created_at),
        finished_at=ts(record.finished_at),
        suite=record.suite or "",
        scheduled_for=ts(record.scheduled_for),
    )


def revision_to_pb(
    revision: Revision, finished_at: dt.datetime | None = None
) -> operator_pb2.Revision:
    return operator_pb2.Revision(
        month=str(revision.month),
        revision=revision.revision,
        round_id=revision.round_id,
        scheduled_for=ts(revision.scheduled_for),
        state=_ROUND_STATE[revision.state],
        latest=revision.latest,
        finished_at=ts(finished_at),
    )


def carrier_status_to_pb(c: CarrierRound) -> operator_pb2.CarrierStatus:
    return operator_pb2.CarrierStatus(
        carrier_id=c.carrier_id,
        state=_CARRIER_STATE[c.state],
        error_code=c.error_code,  # type: ignore[arg-type]
        message=c.message,
        late_answer_at=ts(c.late_answer_at),
    )


def table_to_pb(table: ScopedTable) -> operator_pb2.ScopedTable:
    return operator_pb2.ScopedTable(
        scope=table.scope,
        metric=table.metric,
        metric_version=table.version,
        group_by=[wire.dimension_to_pb(d) for d in table.group_by],
        cells=[
            operator_pb2.CombinedCell(
                key=[
                    types_pb2.GroupKey(dimension=wire.dimension_to_pb(d), value=v)
                    for d, v in cell.key
                ],
                statistics=[wire.stat_to_pb(s) for s in cell.stats],
                figures=[
                    operator_pb2.Figure(name=f.name, value=f.value, complete=f.complete)
                    for f in cell.figures
                ],
                status=wire.status_to_pb(cell.status),
                incomplete=cell.incomplete,
            )
            for cell in table.cells
        ],
        disclosure=None if table.disclosure is None else wire.disclosure_to_pb(table.disclosure),
    )


def table_from_pb(msg: operator_pb2.ScopedTable) -> ScopedTable:
    cells = []
    for c in msg.cells:
        stats = tuple(wire.stat_from_pb(s) for s in c.statistics)
        cells.append(
            CombinedCell(
                key=tuple((wire.dimension_from_pb(k.dimension), k.value) for k in c.key),
                stats=stats,
                figures=tuple(
                    FigureValue(
                        f.name, f.value if not math.isnan(f.value) else math.nan, f.complete
                    )
                    for f in c.figures
                ),
                status=wire.status_from_pb(c.status) if c.status else Status.RELEASED,
            )
        )
    return ScopedTable(
        scope=msg.scope,
        metric=msg.metric,
        version=msg.metric_version,
        group_by=tuple(wire.dimension_from_pb(d) for d in msg.group_by),
        cells=tuple(cells),
        disclosure=wire.disclosure_from_pb(
            msg.disclosure,
            (s.name for s in catalogue.get_metric(msg.metric, msg.metric_version).statistics),
        )
        if msg.HasField("disclosure")
        else None,
    )
