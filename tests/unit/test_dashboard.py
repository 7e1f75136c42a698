"""The dashboard's sessions, forms and refusals, in process (Starlette's test client) with an
operator API that answers as the coordinator does for each token."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from starlette.testclient import TestClient

from coordinator.client import Identity, RoundOutcome
from coordinator.combine import ScopedTable
from coordinator.config import Role
from coordinator.dashboard.app import PLOTLY_JS, Dashboard
from coordinator.dashboard.sessions import COOKIE
from coordinator.dashboard.settings import DashboardConfig, load_dashboard_config
from coordinator.store import CarrierRoundState, RoundState
from fedoversight.errors import AuthenticationError, ConfigError, PolicyRefusedError
from fedoversight.periods import Period
from fedoversight.v1 import operator_pb2

TOKENS = {
    "op-token": Identity("alice", Role.OPERATOR, "token"),
    "view-token": Identity("bob", Role.VIEWER, "token"),
}


class FakeApi:
    """What the operator API answers a caller holding ``token`` (unknown: UNAUTHENTICATED;
    a viewer creating a round: PERMISSION_DENIED)."""

    created: ClassVar[list[tuple[Period, int]]] = []
    purposes: ClassVar[list[tuple[object, object]]] = []

    def __init__(self, token: str) -> None:
        self.token = token
        self.closed = False

    def _who(self) -> Identity:
        if self.closed:
            raise AssertionError("a closed client was used")
        who = TOKENS.get(self.token)
        if who is None:
            raise AuthenticationError("unknown token")
        return who

    async def whoami(self) -> Identity:
        return self._who()

    async def close(self) -> None:
        self.closed = True

    async def list_carriers(self) -> list[operator_pb2.CarrierInfo]:
        self._who()
        return [operator_pb2.CarrierInfo(carrier_id="c001", connected=True, node_version="1.0")]

    async def list_rounds(
        self, limit: int = 50, *, suite: str | None = None
    ) -> list[operator_pb2.RoundSummary]:
        self._who()
        return []

    async def list_purposes(self) -> operator_pb2.ListPurposesResponse:
        self._who()
        return operator_pb2.ListPurposesResponse(
            list_version="2026.1",
            purposes=[
                operator_pb2.PurposeInfo(
                    code="plan-cost-oversight", title="Plan cost oversight", entitled=True
                ),
                operator_pb2.PurposeInfo(
                    code="program-integrity", title="Program integrity", entitled=False
                ),
            ],
            default_purpose="plan-cost-oversight",
        )

    async def list_metrics(self) -> operator_pb2.ListMetricsResponse:
        self._who()
        from coordinator.operator_api import metrics_response

        return metrics_response()

    async def create_round(self, period: Period, queries: Sequence[Any], **kwargs: object) -> str:
        if self._who().role is not Role.OPERATOR:
            raise PolicyRefusedError("role viewer may not do this (needs operator)")
        FakeApi.created.append((period, len(queries)))
        FakeApi.purposes.append((kwargs.get("purpose"), kwargs.get("justification")))
        return "r-20260101000000-abcdef12"

    async def get_round(self, round_id: str) -> RoundOutcome:
        self._who()
        return RoundOutcome(
            round_id=round_id,
            state=RoundState.COMPLETE,
            period=Period.parse("2026-01:2026-03"),
            carriers=(("c001", CarrierRoundState.ANSWERED, ""),),
            tables=_tables(),
        )


def _tables() -> tuple[ScopedTable, ...]:
    """Two carriers by month: one withholds a month, the other has a month of 12 members
    (unreliable); the program combines them (the frames' own test tables)."""
    from tests.unit.test_frames import _tables as frame_tables

    return tuple(frame_tables())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def made() -> list[FakeApi]:
    return []


@pytest.fixture
def client(clock: Clock, made: list[FakeApi]) -> TestClient:
    def factory(token: str) -> Any:
        api = FakeApi(token)
        made.append(api)
        return api

    dashboard = Dashboard(DashboardConfig(idle_minutes=1), client_factory=factory, clock=clock)
    return TestClient(dashboard.app(), follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, token: str) -> str:
    page = client.get("/login")
    reply = client.post(
        "/login", data={"csrf": csrf_of(page.text), "token": token, "next": "/carriers"}
    )
    assert reply.status_code == 303, reply.text
    assert reply.headers["location"] == "/carriers"
    return client.get("/carriers").text


def test_sign_in_sets_a_strict_http_only_cookie_with_a_new_id(client: TestClient) -> None:
    page = client.get("/login")
    anonymous = client.cookies[COOKIE]
    reply = client.post("/login", data={"csrf": csrf_of(page.text), "token": "op-token"})
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert client.cookies[COOKIE] != anonymous
    assert "alice" in client.get("/carriers").text
    # The id held before signing in is worth nothing now.
    client.cookies.clear()
    client.cookies.set(COOKIE, anonymous)
    assert client.get("/carriers").status_code == 303


def test_the_cookie_is_secure_over_https(clock: Clock) -> None:
    dashboard = Dashboard(DashboardConfig(), client_factory=FakeApi, clock=clock)  # type: ignore[arg-type]
    client = TestClient(dashboard.app(), base_url="https://testserver", follow_redirects=False)
    page = client.get("/login")
    assert "Secure" in page.headers["set-cookie"]


def test_an_unknown_token_is_refused_and_its_client_closed(
    client: TestClient, made: list[FakeApi]
) -> None:
    page = client.get("/login")
    reply = client.post("/login", data={"csrf": csrf_of(page.text), "token": "guess"})
    assert reply.status_code == 401
    assert "did not accept this token" in reply.text
    assert made[-1].closed
    assert client.get("/rounds").status_code == 303


def test_a_post_without_the_session_csrf_token_is_refused(client: TestClient) -> None:
    sign_in(client, "op-token")
    form = {"metric": "enrollment.member_months", "period": "2026-01"}
    for csrf in (None, "not-the-token"):
        data = dict(form, csrf=csrf) if csrf else form
        reply = client.post("/launch", data=data)
        assert reply.status_code == 403
        assert "security token" in reply.text
    # And the login form's token is checked as well.
    client.cookies.clear()
    client.get("/login")
    assert client.post("/login", data={"csrf": "x", "token": "op-token"}).status_code == 403


def test_a_viewer_has_no_launch_form_and_the_api_refuses_its_launch(client: TestClient) -> None:
    FakeApi.created.clear()
    html = sign_in(client, "view-token")
    assert 'href="/launch"' not in html
    page = client.get("/launch")
    assert 'id="launch-form"' not in page.text and 'id="no-launch"' in page.text
    reply = client.post(
        "/launch",
        data={"csrf": csrf_of(html), "metric": "enrollment.member_months", "period": "2026-01"},
    )
    assert reply.status_code == 403
    assert "PERMISSION_DENIED" in reply.text and "may not do this" in reply.text
    assert not FakeApi.created


def test_an_operator_launches_from_the_form(client: TestClient) -> None:
    FakeApi.created.clear()
    html = sign_in(client, "op-token")
    FakeApi.purposes.clear()
    page = client.get("/launch")
    assert 'id="launch-form"' in page.text and "cost.pmpm" in page.text
    # Only the purposes the office is entitled to, the default chosen.
    assert 'value="plan-cost-oversight" selected' in page.text
    assert "program-integrity" not in page.text
    reply = client.post(
        "/launch",
        data={
            "csrf": csrf_of(html),
            "purpose": "plan-cost-oversight",
            "justification": "premium review",
            "metric": ["cost.pmpm", "util.ed_visits"],
            "by": "month",
            "period": "2026-01:2026-03",
        },
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == "/rounds/r-20260101000000-abcdef12"
    assert FakeApi.created == [(Period.parse("2026-01:2026-03"), 2)]
    assert FakeApi.purposes == [("plan-cost-oversight", "premium review")]
    bad = client.post("/launch", data={"csrf": csrf_of(html), "metric": "cost.pmpm", "period": "x"})
    assert bad.status_code == 400 and "not a month" in bad.text


def test_an_idle_session_ends_and_its_client_is_closed(
    client: TestClient, clock: Clock, made: list[FakeApi]
) -> None:
    sign_in(client, "op-token")
    clock.now += 59
    assert client.get("/carriers").status_code == 200
    clock.now += 61
    reply = client.get("/carriers")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/login")
    assert made[-1].closed


def test_logout_ends_the_session(client: TestClient, made: list[FakeApi]) -> None:
    html = sign_in(client, "op-token")
    held = client.cookies[COOKIE]
    assert client.post("/logout", data={"csrf": csrf_of(html)}).status_code == 303
    assert made[-1].closed
    client.cookies.clear()
    client.cookies.set(COOKIE, held)
    assert client.get("/rounds").status_code == 303


def test_a_token_the_api_stops_accepting_ends_the_session(client: TestClient) -> None:
    sign_in(client, "op-token")
    TOKENS["op-token"], saved = None, TOKENS["op-token"]  # type: ignore[assignment]
    try:
        reply = client.get("/carriers")
    finally:
        TOKENS["op-token"] = saved
    assert reply.status_code == 303 and "expired" in reply.headers["location"]


def test_login_returns_only_to_a_local_path(client: TestClient) -> None:
    for target in ("//elsewhere.example/x", "https://elsewhere.example/", "/\\x"):
        page = client.get("/login")
        reply = client.post(
            "/login", data={"csrf": csrf_of(page.text), "token": "op-token", "next": target}
        )
        assert reply.headers["location"] == "/"


def test_pages_carry_a_strict_policy_and_plotly_comes_from_the_package(
    client: TestClient,
) -> None:
    page = client.get("/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    script = client.get("/static/plotly.min.js")
    assert script.status_code == 200
    assert script.content == PLOTLY_JS.read_bytes()
    assert client.get("/static/dashboard.css").status_code == 200


def test_the_round_page_marks_withheld_and_unreliable_values(client: TestClient) -> None:
    sign_in(client, "view-token")
    page = client.get("/rounds/r-20260101000000-abcdef12")
    assert page.status_code == 200
    assert 'class="badge withheld"' in page.text
    assert 'class="flag unreliable"' in page.text
    assert "NCHS" in page.text
    csv = client.get("/rounds/r-20260101000000-abcdef12/export.csv")
    assert csv.headers["content-disposition"].endswith('.csv"')
    assert csv.text.splitlines()[0].startswith("round_id,period,metric")
    parquet = client.get("/rounds/r-20260101000000-abcdef12/export.parquet")
    assert parquet.content[:4] == b"PAR1"


def test_settings_read_a_toml_file_and_flags_override_it(tmp_path: Any) -> None:
    (tmp_path / "ca.pem").write_text("a CA")
    path = tmp_path / "dashboard.toml"
    path.write_text(
        'coordinator = "oversight.example.gov:50052"\nca = "ca.pem"\nidle_minutes = 5\n'
    )
    config = load_dashboard_config(path, listen="127.0.0.1:9000")
    assert config.coordinator == "oversight.example.gov:50052"
    assert config.ca == tmp_path / "ca.pem"
    assert config.host_port == ("127.0.0.1", 9000)
    assert DashboardConfig().host_port == ("127.0.0.1", 8080)
    for wrong in ({"listen": "8080"}, {"listen": "localhost:http"}, {"ca": tmp_path / "none"}):
        with pytest.raises(ConfigError):
            load_dashboard_config(None, **wrong)


async def test_visitors_make_room_before_signed_in_users() -> None:
    from coordinator.dashboard.sessions import Sessions

    sessions = Sessions(idle=60, limit=3, clock=Clock())
    api = FakeApi("op-token")
    user = await sessions.sign_in(None, TOKENS["op-token"], api)  # type: ignore[arg-type]
    for _ in range(10):
        await sessions.new()
    assert len(sessions) == 3
    assert await sessions.get(user.id) is user and not api.closed
