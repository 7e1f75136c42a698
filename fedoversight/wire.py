"""The one conversion module between protobuf messages and domain types.

Decoding is strict: anything not of the contract's form raises
:class:`~fedoversight.errors.InvalidRequestError` with a message that never echoes the input.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterable, Mapping

from google.protobuf.message import DecodeError

from fedoversight import catalogue
from fedoversight.dimensions import Dimension, check_value
from fedoversight.domain import (
    AuditAnchor,
    CellResult,
    DisclosureSummary,
    Method,
    Missing,
    NoiseScale,
    Perturbation,
    Purpose,
    QuerySpec,
    QueryTable,
    RequestSpec,
    ResultSpec,
    Status,
    StatValue,
    StatValueType,
    Withheld,
)
from fedoversight.errors import InvalidRequestError, OversightError
from fedoversight.histogram import LAYOUT_VERSION, N_BINS, Histogram
from fedoversight.periods import Month, Period
from fedoversight.v1 import types_pb2

#: Limits on a request's size, checked before anything else looks at it.
MAX_QUERIES = 32
MAX_FILTER_VALUES = 200
MAX_PARAMETERS = 16
MAX_CARRIERS = 10_000
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: A purpose's code, and an office's name.
PURPOSE_CODE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
OFFICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_JUSTIFICATION = 1000

_DIM_TO_PB: dict[Dimension, types_pb2.Dimension.ValueType] = {
    d: types_pb2.Dimension.Value(f"DIMENSION_{d.name}") for d in Dimension
}
_DIM_FROM_PB = {v: k for k, v in _DIM_TO_PB.items()}
_STATUS_TO_PB: dict[Status, types_pb2.CellStatus.ValueType] = {
    Status.RELEASED: types_pb2.CELL_STATUS_RELEASED,
    Status.WITHHELD: types_pb2.CELL_STATUS_WITHHELD,
    Status.PERTURBED: types_pb2.CELL_STATUS_PERTURBED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
_REASON_TO_PB: dict[Withheld, types_pb2.WithheldReason.ValueType] = {
    r: types_pb2.WithheldReason.Value(f"WITHHELD_REASON_{r.name}") for r in Withheld
}
_REASON_FROM_PB = {v: k for k, v in _REASON_TO_PB.items()}
_METHOD_TO_PB: dict[Method, types_pb2.DisclosureMethod.ValueType] = {
    Method.CELL_KEY: types_pb2.DISCLOSURE_METHOD_CELL_KEY,
    Method.DIFFERENTIAL_PRIVACY: types_pb2.DISCLOSURE_METHOD_DIFFERENTIAL_PRIVACY,
    Method.NONE: types_pb2.DISCLOSURE_METHOD_NONE,
}
_METHOD_FROM_PB = {v: k for k, v in _METHOD_TO_PB.items()}


def dimension_to_pb(dim: Dimension) -> types_pb2.Dimension.ValueType:
    return _DIM_TO_PB[dim]


def dimension_from_pb(value: int) -> Dimension:
    try:
        return _DIM_FROM_PB[types_pb2.Dimension.ValueType(value)]
    except KeyError:
        raise InvalidRequestError("unknown dimension") from None


def status_to_pb(status: Status) -> types_pb2.CellStatus.ValueType:
    return _STATUS_TO_PB[status]


def status_from_pb(value: int) -> Status:
    try:
        return _STATUS_FROM_PB[types_pb2.CellStatus.ValueType(value)]
    except KeyError:
        raise InvalidRequestError("unknown cell status") from None


def _check_id(text: str, what: str) -> str:
    if not ID_RE.fullmatch(text):
        raise InvalidRequestError(f"{what} is not of the expected form")
    return text


def _ts(value: dt.datetime) -> types_pb2.google_dot_protobuf_dot_timestamp__pb2.Timestamp:  # type: ignore[name-defined]
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def _from_ts(ts: object) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)  # type: ignore[attr-defined,no-any-return]


# --- periods and queries ----------------------------------------------------------------------


def period_to_pb(period: Period) -> types_pb2.Period:
    return types_pb2.Period(first_month=str(period.first), last_month=str(period.last))


def period_from_pb(msg: types_pb2.Period) -> Period:
    return Period(Month.parse(msg.first_month), Month.parse(msg.last_month))


def query_to_pb(query: QuerySpec) -> types_pb2.Query:
    return types_pb2.Query(
        metric=query.metric,
        metric_version=query.version,
        group_by=[dimension_to_pb(d) for d in query.group_by],
        filters=[
            types_pb2.Filter(dimension=dimension_to_pb(d), values=list(v)) for d, v in query.filters
        ],
        parameters=dict(query.parameters),
    )


def make_query(
    metric: str,
    version: int = 0,
    group_by: Iterable[Dimension] = (),
    filters: Mapping[Dimension, Iterable[str]] | None = None,
    parameters: Mapping[str, float] | None = None,
) -> QuerySpec:
    """Build a validated query (the catalogue's latest version when ``version`` is 0)."""
    spec = catalogue.get_metric(metric, version or None)
    dims = tuple(group_by)
    fmap: dict[Dimension, tuple[str, ...]] = {}
    for dim, values in (filters or {}).items():
        vals = tuple(sorted(set(values)))
        if not vals or len(vals) > MAX_FILTER_VALUES:
            raise InvalidRequestError("a filter needs 1 to 200 values")
        fmap[dim] = tuple(check_value(dim, v) for v in vals)
    params = spec.check_query(dims, fmap, parameters or {})
    return QuerySpec(
        metric=spec.name,
        version=spec.version,
        group_by=dims,
        filters=tuple(sorted(fmap.items())),
        parameters=tuple(sorted(params.items())),
    )


def query_from_pb(msg: types_pb2.Query) -> QuerySpec:
    if len(msg.parameters) > MAX_PARAMETERS or len(msg.filters) > len(Dimension):
        raise InvalidRequestError("too many parameters or filters")
    filters: dict[Dimension, list[str]] = {}
    for f in msg.filters:
        dim = dimension_from_pb(f.dimension)
        if dim in filters:
            raise InvalidRequestError("a dimension is filtered twice")
        filters[dim] = list(f.values)
    return make_query(
        msg.metric,
        msg.metric_version,
        [dimension_from_pb(d) for d in msg.group_by],
        filters,
        dict(msg.parameters),
    )


# --- requests ---------------------------------------------------------------------------------


def request_to_pb(req: RequestSpec) -> types_pb2.MetricRequest:
    msg = types_pb2.MetricRequest(
        request_id=req.request_id,
        round_id=req.round_id,
        catalogue_version=req.catalogue_version,
        period=period_to_pb(req.period),
        queries=[query_to_pb(q) for q in req.queries],
        issued_at=_ts(req.issued_at),
        expires_at=_ts(req.expires_at),
        nonce=req.nonce,
        carriers=list(req.carriers),
    )
    if req.answer_by is not None:
        msg.answer_by.CopyFrom(_ts(req.answer_by))
    if req.purpose is not None:
        msg.purpose.CopyFrom(purpose_to_pb(req.purpose))
    return msg


def purpose_to_pb(purpose: Purpose) -> types_pb2.Purpose:
    return types_pb2.Purpose(
        code=purpose.code,
        list_version=purpose.list_version,
        justification=purpose.justification,
        office=purpose.office,
    )


def check_justification(text: str) -> str:
    """A justification: 1 to 1,000 printable characters (no control characters)."""
    if not 1 <= len(text) <= MAX_JUSTIFICATION or not text.isprintable() or not text.strip():
        raise InvalidRequestError(
            f"a justification is 1 to {MAX_JUSTIFICATION} printable characters"
        )
    return text


def make_purpose(code: str, list_version: str, justification: str, office: str) -> Purpose:
    """A validated purpose (of the wire's form; whether the list has it is the caller's)."""
    if not PURPOSE_CODE_RE.fullmatch(code):
        raise InvalidRequestError("purpose code is not of the expected form")
    if not ID_RE.fullmatch(list_version):
        raise InvalidRequestError("purpose list version is not of the expected form")
    if not OFFICE_RE.fullmatch(office):
        raise InvalidRequestError("office is not of the expected form")
    return Purpose(code, list_version, check_justification(justification), office)


def purpose_from_pb(msg: types_pb2.Purpose) -> Purpose:
    return make_purpose(msg.code, msg.list_version, msg.justification, msg.office)


def request_from_pb(msg: types_pb2.MetricRequest) -> RequestSpec:
    """Strictly decode and validate a request."""
    if not msg.queries or len(msg.queries) > MAX_QUERIES:
        raise InvalidRequestError(f"a request carries 1 to {MAX_QUERIES} queries")
    if msg.catalogue_version != catalogue.CATALOGUE_VERSION:
        from fedoversight.errors import UnknownMetricError

        raise UnknownMetricError("catalogue version not supported")
    if not all(msg.HasField(f) for f in ("period", "issued_at", "expires_at")):
        raise InvalidRequestError("request lacks a period or validity window")
    if not 16 <= len(msg.nonce) <= 64:
        raise InvalidRequestError("request nonce must be 16 to 64 bytes")
    if len(msg.carriers) > MAX_CARRIERS or list(msg.carriers) != sorted(set(msg.carriers)):
        raise InvalidRequestError("a request names its carriers once each, sorted")
    try:
        return RequestSpec(
            request_id=_check_id(msg.request_id, "request id"),
            round_id=_check_id(msg.round_id, "round id"),
            catalogue_version=msg.catalogue_version,
            period=period_from_pb(msg.period),
            queries=tuple(query_from_pb(q) for q in msg.queries),
            issued_at=_from_ts(msg.issued_at),
            expires_at=_from_ts(msg.expires_at),
            nonce=bytes(msg.nonce),
            carriers=tuple(_check_id(c, "carrier id") for c in msg.carriers),
            answer_by=_from_ts(msg.answer_by) if msg.HasField("answer_by") else None,
            purpose=purpose_from_pb(msg.purpose) if msg.HasField("purpose") else None,
        )
    except OversightError:
        raise
    except (ValueError, OverflowError, TypeError):
        raise InvalidRequestError("request fields are out of range") from None


def decode_request_bytes(data: bytes) -> RequestSpec:
    msg = types_pb2.MetricRequest()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise InvalidRequestError("request bytes do not decode") from None
    return request_from_pb(msg)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- results ----------------------------------------------------------------------------------


def missing_to_pb(missing: Missing) -> types_pb2.Missing:
    msg = types_pb2.Missing(carriers=missing.carriers)
    if missing.at_most is not None:
        msg.at_most = missing.at_most
    if missing.members_at_most is not None:
        msg.members_at_most = missing.members_at_most
    if missing.reason is not None:
        msg.reason = _REASON_TO_PB[missing.reason]
    return msg


def missing_from_pb(msg: types_pb2.Missing) -> Missing:
    reason = None
    if msg.reason:
        try:
            reason = _REASON_FROM_PB[msg.reason]
        except KeyError:
            raise InvalidRequestError("unknown withheld reason") from None
    at_most = msg.at_most if msg.HasField("at_most") else None
    members = msg.members_at_most if msg.HasField("members_at_most") else None
    if (at_most is not None and at_most < 0) or (members is not None and members < 0):
        raise InvalidRequestError("a missing bound below zero")
    return Missing(msg.carriers, at_most, members, reason)


def stat_to_pb(stat: StatValue) -> types_pb2.Statistic:
    msg = types_pb2.Statistic(name=stat.name, status=status_to_pb(stat.status))
    if stat.missing is not None:
        msg.missing.CopyFrom(missing_to_pb(stat.missing))
    value = stat.value
    if value is None or stat.status.withheld:
        return msg
    if isinstance(value, Histogram):
        msg.histogram.layout_version = LAYOUT_VERSION
        msg.histogram.counts.extend(value.counts)
        msg.histogram.sums_cents.extend(value.sums_cents)
        msg.histogram.withheld_bins.extend(value.withheld_bins)
    elif isinstance(value, bool):
        raise TypeError("a statistic is never a bool")
    elif isinstance(value, int):
        msg.integer = value
    else:
        msg.real = float(value)
    return msg


def stat_from_pb(msg: types_pb2.Statistic) -> StatValue:
    which = msg.WhichOneof("value")
    value: StatValueType | None
    if which == "integer":
        value = msg.integer
    elif which == "real":
        value = msg.real
    elif which == "histogram":
        h = msg.histogram
        if (
            h.layout_version != LAYOUT_VERSION
            or len(h.counts) != N_BINS
            or len(h.sums_cents) != N_BINS
        ):
            raise InvalidRequestError("histogram layout mismatch")
        withheld = tuple(h.withheld_bins)
        if any(b >= N_BINS for b in withheld) or list(withheld) != sorted(set(withheld)):
            raise InvalidRequestError("histogram withheld bins out of range")
        value = Histogram(tuple(h.counts), tuple(h.sums_cents), withheld)
    else:
        value = None
    missing = missing_from_pb(msg.missing) if msg.HasField("missing") else None
    status = status_from_pb(msg.status)
    if status.withheld and value is not None:
        raise InvalidRequestError("a withheld statistic carries a value")
    return StatValue(name=msg.name, status=status, value=value, missing=missing)


def cell_to_pb(cell: CellResult) -> types_pb2.Cell:
    return types_pb2.Cell(
        key=[types_pb2.GroupKey(dimension=dimension_to_pb(d), value=v) for d, v in cell.key],
        statistics=[stat_to_pb(s) for s in cell.stats],
        status=status_to_pb(cell.status),
    )


def cell_from_pb(msg: types_pb2.Cell) -> CellResult:
    key = tuple((dimension_from_pb(k.dimension), k.value) for k in msg.key)
    for dim, value in key:
        check_value(dim, value)
    return CellResult(key=key, stats=tuple(stat_from_pb(s) for s in msg.statistics))


def result_to_pb(res: ResultSpec) -> types_pb2.MetricResult:
    msg = types_pb2.MetricResult(
        request_id=res.request_id,
        round_id=res.round_id,
        carrier_id=res.carrier_id,
        catalogue_version=res.catalogue_version,
        results=[
            types_pb2.QueryResult(
                metric=t.metric,
                metric_version=t.version,
                group_by=[dimension_to_pb(d) for d in t.group_by],
                cells=[cell_to_pb(c) for c in t.cells],
                disclosure=disclosure_to_pb(t.disclosure),
            )
            for t in res.tables
        ],
        request_digest=res.request_digest,
        data_snapshot=res.data_snapshot,
        computed_at=_ts(res.computed_at),
    )
    if res.audit_anchor is not None:
        msg.audit_anchor.CopyFrom(anchor_to_pb(res.audit_anchor))
    return msg


def anchor_to_pb(anchor: AuditAnchor) -> types_pb2.AuditAnchor:
    return types_pb2.AuditAnchor(seq=anchor.seq, hash=bytes.fromhex(anchor.hash))


def anchor_from_pb(msg: types_pb2.AuditAnchor) -> AuditAnchor:
    if len(msg.hash) != 32:
        raise InvalidRequestError("malformed audit anchor")
    return AuditAnchor(seq=msg.seq, hash=bytes(msg.hash).hex())


def disclosure_to_pb(d: DisclosureSummary) -> types_pb2.DisclosureSummary:
    msg = types_pb2.DisclosureSummary(
        min_cell_size=d.min_cell_size,
        cells_released=d.cells_released,
        cells_withheld=d.cells_withheld,
        cells_partly_withheld=d.cells_partly_withheld,
        cells_perturbed=d.cells_perturbed,
        policy_digest=d.policy_digest,
        method=_METHOD_TO_PB[d.method],
        withheld=[
            types_pb2.WithheldCount(reason=_REASON_TO_PB[r], statistics=n) for r, n in d.withheld
        ],
        noise_mechanism=d.noise_mechanism,
        noise_scales=[
            types_pb2.NoiseScale(statistic=n.statistic, scale=n.scale, rho=n.rho)
            for n in d.noise_scales
        ],
        rho_spent=d.rho_spent,
        rho_remaining=d.rho_remaining,
    )
    if d.perturbation is not None:
        p = d.perturbation
        msg.perturbation.CopyFrom(
            types_pb2.Perturbation(
                count_max_noise=p.count_max_noise,
                count_variance=p.count_variance,
                p_percent=p.p_percent,
                spread=p.spread,
                key_version=p.key_version,
            )
        )
    return msg


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) and v >= 0 for v in values)


def disclosure_from_pb(
    d: types_pb2.DisclosureSummary, statistics: Iterable[str]
) -> DisclosureSummary:
    known = set(statistics)
    scales = []
    for n in d.noise_scales:
        if n.statistic not in known:
            raise InvalidRequestError("noise scale of an unknown statistic")
        if not _finite(n.scale, n.rho):
            raise InvalidRequestError("malformed noise scale")
        scales.append(NoiseScale(n.statistic, n.scale, n.rho))
    if not _finite(d.rho_spent, d.rho_remaining):
        raise InvalidRequestError("malformed privacy budget")
    try:
        method = _METHOD_FROM_PB[d.method]
        withheld = tuple((_REASON_FROM_PB[w.reason], w.statistics) for w in d.withheld)
    except KeyError:
        raise InvalidRequestError("unknown disclosure method or withheld reason") from None
    perturbation = None
    if d.HasField("perturbation"):
        p = d.perturbation
        if not _finite(p.count_variance, p.p_percent, p.spread):
            raise InvalidRequestError("malformed perturbation parameters")
        perturbation = Perturbation(
            p.count_max_noise, p.count_variance, p.p_percent, p.spread, p.key_version
        )
    return DisclosureSummary(
        min_cell_size=d.min_cell_size,
        cells_released=d.cells_released,
        cells_withheld=d.cells_withheld,
        cells_partly_withheld=d.cells_partly_withheld,
        cells_perturbed=d.cells_perturbed,
        policy_digest=d.policy_digest,
        method=method,
        perturbation=perturbation,
        withheld=withheld,
        noise_mechanism=d.noise_mechanism,
        noise_scales=tuple(scales),
        rho_spent=d.rho_spent,
        rho_remaining=d.rho_remaining,
    )


def result_from_pb(msg: types_pb2.MetricResult) -> ResultSpec:
    tables = []
    for t in msg.results:
        spec = catalogue.get_metric(t.metric, t.metric_version)
        tables.append(
            QueryTable(
                metric=spec.name,
                version=spec.version,
                group_by=tuple(dimension_from_pb(g) for g in t.group_by),
                cells=tuple(cell_from_pb(c) for c in t.cells),
                disclosure=disclosure_from_pb(t.disclosure, (s.name for s in spec.statistics)),
            )
        )
    return ResultSpec(
        request_id=msg.request_id,
        round_id=msg.round_id,
        carrier_id=msg.carrier_id,
        catalogue_version=msg.catalogue_version,
        tables=tuple(tables),
        request_digest=bytes(msg.request_digest),
        data_snapshot=msg.data_snapshot,
        computed_at=_from_ts(msg.computed_at),
        audit_anchor=anchor_from_pb(msg.audit_anchor) if msg.HasField("audit_anchor") else None,
    )


def decode_result_bytes(data: bytes) -> ResultSpec:
    msg = types_pb2.MetricResult()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise InvalidRequestError("result bytes do not decode") from None
    return result_from_pb(msg)
