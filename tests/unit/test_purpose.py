"""Purposes without sockets: on the wire, in the coordinator's configuration and registry, and
in a carrier's policy (docs/purpose.md)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from carrier_node.policy import Policy, PurposePolicy, PurposeRule
from coordinator.access import Caller, ForbiddenError
from coordinator.config import CoordinatorConfig, OfficeEntry, OperatorEntry, Role
from coordinator.purposes import DEFAULT_JUSTIFICATION, PurposeRegistry
from coordinator.transparency import refusal_reason
from fedoversight import wire
from fedoversight.dimensions import Dimension as D
from fedoversight.domain import Purpose, RequestSpec
from fedoversight.errors import (
    ConfigError,
    InvalidRequestError,
    PurposeDimensionError,
    PurposeGranularityError,
    PurposeMissingError,
    PurposeRefusedError,
    PurposeScopeError,
    error_code,
    public_message,
)
from fedoversight.periods import Period
from fedoversight.signing import Signer
from fedoversight.v1 import types_pb2

NOW = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
COST = Purpose("plan-cost-oversight", "2026.1", "premium review", "actuarial")


def request(purpose: Purpose | None) -> RequestSpec:
    return RequestSpec(
        request_id="r1.q",
        round_id="r1",
        catalogue_version="1",
        period=Period.parse("2026-01"),
        queries=(wire.make_query("cost.pmpm"),),
        issued_at=NOW,
        expires_at=NOW + dt.timedelta(hours=1),
        nonce=os.urandom(16),
        carriers=("c001",),
        purpose=purpose,
    )


def test_the_purpose_travels_inside_the_signed_request() -> None:
    data = wire.request_to_pb(request(COST)).SerializeToString()
    assert wire.decode_request_bytes(data).purpose == COST
    # A request without one (of a coordinator before purposes) decodes to None.
    bare = wire.request_to_pb(request(None)).SerializeToString()
    assert wire.decode_request_bytes(bare).purpose is None


@pytest.mark.parametrize(
    "field, value",
    [
        ("code", "Plan Cost"),
        ("code", ""),
        ("list_version", ""),
        ("office", "a b"),
        ("justification", ""),
        ("justification", "   "),
        ("justification", "line\nbreak"),
        ("justification", "x" * 1001),
    ],
)
def test_a_malformed_purpose_is_refused(field: str, value: str) -> None:
    msg = wire.request_to_pb(request(COST))
    setattr(msg.purpose, field, value)
    with pytest.raises(InvalidRequestError):
        wire.decode_request_bytes(msg.SerializeToString())


def test_refusals_of_a_purpose_have_fixed_codes_and_messages() -> None:
    assert error_code(PurposeRefusedError("detail")) == types_pb2.ERROR_CODE_PURPOSE_REFUSED
    assert error_code(PurposeMissingError()) == types_pb2.ERROR_CODE_PURPOSE_REFUSED
    for cls in (PurposeScopeError, PurposeDimensionError, PurposeGranularityError):
        assert error_code(cls("x")) == types_pb2.ERROR_CODE_PURPOSE_SCOPE
        # The detail (which may name the purpose) never leaves the node.
        assert public_message(cls("purpose plan-cost-oversight")) == cls.public
    assert len({PurposeScopeError.public, PurposeDimensionError.public}) == 2
    reason = refusal_reason(types_pb2.ERROR_CODE_PURPOSE_SCOPE, PurposeGranularityError.public)
    assert reason == f"ERROR_CODE_PURPOSE_SCOPE: {PurposeGranularityError.public}"
    # A message that is no fixed public message is left out of a published report.
    assert refusal_reason(types_pb2.ERROR_CODE_PURPOSE_SCOPE, "member 123") == (
        "ERROR_CODE_PURPOSE_SCOPE"
    )


def test_a_carriers_policy_by_purpose() -> None:
    policy = Policy(
        purposes=PurposePolicy(
            require=True,
            accepted=("plan-cost-oversight", "rate-negotiation-support"),
            rules={
                "rate-negotiation-support": PurposeRule(
                    metrics=("cost.pmpm", "enrollment.member_months"),
                    dimensions=(D.MONTH, D.AGE_BAND, D.SEX, D.PLAN_CODE),
                    max_group_by=3,
                    forbidden_groupings=((D.MONTH, D.AGE_BAND, D.SEX),),
                )
            },
        )
    )
    rates = Purpose("rate-negotiation-support", "2026.1", "2027 rates", "actuarial")
    with pytest.raises(PurposeMissingError):
        policy.check_purpose(None)
    with pytest.raises(PurposeRefusedError):
        policy.check_purpose(Purpose("program-integrity", "2026.1", "review", "actuarial"))
    policy.check_purpose(COST)
    policy.check_purpose(rates)

    def query(metric: str, *dims: D, filters: dict[D, list[str]] | None = None) -> object:
        return wire.make_query(metric, group_by=dims, filters=filters)

    allowed = query("cost.pmpm", D.MONTH, D.AGE_BAND)
    policy.check_for_purpose(rates, allowed)  # type: ignore[arg-type]
    cases = [
        (query("util.ed_visits", D.MONTH), PurposeScopeError),
        (query("cost.pmpm", D.STATE), PurposeDimensionError),
        (query("cost.pmpm", filters={D.STATE: ["MD"]}), PurposeDimensionError),
        (query("cost.pmpm", D.MONTH, D.AGE_BAND, D.SEX), PurposeGranularityError),
        (query("cost.pmpm", D.AGE_BAND, D.SEX, D.PLAN_CODE, D.MONTH), PurposeGranularityError),
    ]
    for q, error in cases:
        with pytest.raises(error):
            policy.check_for_purpose(rates, q)  # type: ignore[arg-type]
        # The same query for a purpose without rules is answered.
        policy.check_for_purpose(COST, q)  # type: ignore[arg-type]
    # By default any purpose, and none, is accepted.
    Policy().check_purpose(None)
    Policy().check_purpose(rates)
    assert any(name == "for rate-negotiation-support" for name, _ in policy.summary()[0][1])


def test_a_policy_may_not_have_rules_for_purposes_it_refuses() -> None:
    with pytest.raises(ValidationError, match="not accepted"):
        PurposePolicy(accepted=("quality-oversight",), rules={"program-integrity": PurposeRule()})
    with pytest.raises(ValidationError):
        PurposePolicy(accepted=("Not A Code",))


def config(**changes: object) -> CoordinatorConfig:
    return CoordinatorConfig.model_validate({"insecure": True, **changes})


def test_the_coordinators_purposes_and_offices_are_checked() -> None:
    default = config()
    assert default.default_purpose == "plan-cost-oversight"
    assert {p.code for p in default.purposes} >= {"quality-oversight", "program-integrity"}
    with pytest.raises(ValidationError, match="default_purpose"):
        config(default_purpose="marketing")
    with pytest.raises(ValidationError, match="not in the list"):
        config(offices=[{"name": "actuarial", "purposes": ["marketing"]}])
    with pytest.raises(ValidationError, match="office must be one"):
        config(
            offices=[{"name": "actuarial", "purposes": ["plan-cost-oversight"]}],
            operators=[{"name": "alice", "role": "operator"}],
        )
    with pytest.raises(ValidationError, match="no offices configured"):
        config(operators=[{"name": "alice", "role": "operator", "office": "actuarial"}])


def registry(default: str = "plan-cost-oversight") -> PurposeRegistry:
    return PurposeRegistry.from_config(
        config(
            default_purpose=default,
            offices=[
                OfficeEntry(name="actuarial", purposes=("plan-cost-oversight",)),
                OfficeEntry(name="quality", purposes=("quality-oversight",)),
            ],
            operators=[
                OperatorEntry(name="alice", role=Role.OPERATOR, office="actuarial"),
                OperatorEntry(name="quinn", role=Role.VIEWER, office="quality"),
            ],
        )
    )


ALICE = Caller("alice", Role.OPERATOR, "certificate", "actuarial")
QUINN = Caller("quinn", Role.VIEWER, "certificate", "quality")


def test_rounds_without_a_purpose_get_the_default_or_are_refused() -> None:
    given = registry().for_new_round(ALICE, "", "")
    assert (given.code, given.office, given.list_version) == (
        "plan-cost-oversight",
        "actuarial",
        "2026.1",
    )
    assert given.justification == f"Plan cost oversight {DEFAULT_JUSTIFICATION}"
    named = registry().for_new_round(ALICE, "plan-cost-oversight", "premium review")
    assert named.justification == "premium review"
    with pytest.raises(InvalidRequestError, match="no default purpose"):
        registry(default="").for_new_round(ALICE, "", "")
    with pytest.raises(ForbiddenError):
        registry().for_new_round(QUINN, "plan-cost-oversight", "why")
    with pytest.raises(InvalidRequestError, match="printable"):
        registry().for_new_round(ALICE, "plan-cost-oversight", "bad\x00text")


def test_a_scheduled_suite_declares_a_purpose_of_the_list_for_an_entitled_office() -> None:
    given = registry().for_suite("monthly", "", "actuarial", "PMPM by month")
    assert (given.code, given.office, given.justification) == (
        "plan-cost-oversight",
        "actuarial",
        "PMPM by month",
    )
    untold = registry().for_suite("monthly", "plan-cost-oversight", "actuarial", "")
    assert "monthly" in untold.justification
    with pytest.raises(ConfigError, match="not in the coordinator's list"):
        registry().for_suite("monthly", "marketing", "actuarial", "")
    with pytest.raises(ConfigError, match="not entitled"):
        registry().for_suite("monthly", "plan-cost-oversight", "quality", "")
    with pytest.raises(ConfigError, match="no default purpose"):
        registry(default="").for_suite("monthly", "", "actuarial", "")


def test_signed_requests_must_declare_a_purpose_of_the_callers_office() -> None:
    reg = registry()
    assert reg.check_signed(ALICE, request(COST)) == COST
    with pytest.raises(InvalidRequestError, match="must declare"):
        reg.check_signed(ALICE, request(None))
    with pytest.raises(InvalidRequestError, match="current list"):
        reg.check_signed(ALICE, request(Purpose(COST.code, "2025.9", "why", "actuarial")))
    with pytest.raises(ForbiddenError, match="another office"):
        reg.check_signed(ALICE, request(Purpose(COST.code, "2026.1", "why", "quality")))
    with pytest.raises(ForbiddenError, match="not entitled"):
        reg.check_signed(QUINN, request(COST))


def test_offices_read_the_rounds_of_their_purposes() -> None:
    reg = registry()
    assert reg.may_read(ALICE, "plan-cost-oversight")
    assert not reg.may_read(QUINN, "plan-cost-oversight")
    # Rounds stored before purposes read as of the default purpose.
    assert reg.may_read(ALICE, None) and not reg.may_read(QUINN, None)
    assert not registry(default="").may_read(ALICE, None)
    # Without offices, every caller reads every round.
    open_registry = PurposeRegistry.default()
    assert open_registry.may_read(Caller("bob", Role.VIEWER, "token"), "program-integrity")
    assert reg.retain_until("plan-cost-oversight", NOW) == NOW + dt.timedelta(days=1825)


async def test_a_node_refuses_by_purpose_before_anything_runs(tmp_path: Path) -> None:
    """Through the node's whole answering path: a request without a purpose where the policy
    requires one, and one of a purpose it does not accept, are refused at the purpose stage
    with their fixed message, logged with what they declared; nothing is evaluated."""
    from carrier_node.records.audit import read_entries
    from tests.unit.trust_kit import CountingSource, answer, secure_node, signed_request

    operator = Signer.generate()
    source = CountingSource()
    strict = Policy(purposes=PurposePolicy(require=True, accepted=("quality-oversight",)))
    node = secure_node(tmp_path, operator, source, policy=strict)
    try:
        bare = await answer(node, signed_request(operator, request_id="r1.a"))
        assert bare.refusal.code == types_pb2.ERROR_CODE_PURPOSE_REFUSED
        assert bare.refusal.public_message == PurposeMissingError.public
        other = await answer(node, signed_request(operator, request_id="r1.b", purpose=COST))
        assert other.refusal.code == types_pb2.ERROR_CODE_PURPOSE_REFUSED
        assert other.refusal.public_message == PurposeRefusedError.public
        assert source.calls == 0
        refused = [e for _, e in read_entries(node.audit.path) if e and e.get("kind") == "refused"]
        assert [(e["stage"], e["purpose"]) for e in refused] == [
            ("purpose", None),
            ("purpose", COST.describe()),
        ]
        assert refused[1]["public_message"] == PurposeRefusedError.public
    finally:
        await node.shutdown()


def test_a_reviewers_rejection_is_a_reason_the_report_names() -> None:
    from fedoversight.errors import REVIEWER_REJECTED

    assert refusal_reason(types_pb2.ERROR_CODE_POLICY_REFUSED, REVIEWER_REJECTED) == (
        f"ERROR_CODE_POLICY_REFUSED: {REVIEWER_REJECTED}"
    )
