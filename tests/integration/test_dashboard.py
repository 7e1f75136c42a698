"""WhoAmI on the operator port, and the dashboard signing users in with it against a real
coordinator (the browser tests in tests/browser/ drive the pages in Chromium)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from coordinator.client import OperatorClient
from coordinator.config import Role
from coordinator.dashboard.app import Dashboard
from coordinator.dashboard.settings import DashboardConfig
from fedoversight.errors import AuthenticationError
from oversight_sim.harness import HARNESS_TOKEN_OPERATOR, HARNESS_VIEWER, SimulatedFederation
from tests.integration.test_trust import small


def _sign_in(client: TestClient, token: str) -> int:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return client.post("/login", data={"csrf": csrf.group(1), "token": token}).status_code


async def test_whoami_names_each_token_and_the_dashboard_signs_in_with_it(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    async with SimulatedFederation(
        small(federation_data, 1), tmp_path / "run", operator_port=True
    ) as fed:
        assert fed.pki is not None
        kits = fed.pki.operators
        ca = kits[HARNESS_VIEWER].ca_cert
        tokens = {
            n: kits[n].token.read_text().strip() for n in (HARNESS_VIEWER, HARNESS_TOKEN_OPERATOR)
        }  # type: ignore[union-attr]
        for name, role in ((HARNESS_VIEWER, Role.VIEWER), (HARNESS_TOKEN_OPERATOR, Role.OPERATOR)):
            async with OperatorClient(fed.operator_address, ca_cert=ca, token=tokens[name]) as c:
                who = await c.whoami()
            assert (who.name, who.role, who.via) == (name, role, "token")
        async with OperatorClient(fed.operator_address, ca_cert=ca, token="not-a-token") as c:
            with pytest.raises(AuthenticationError):
                await c.whoami()

        def browse() -> tuple[int, int, str]:
            config = DashboardConfig(coordinator=fed.operator_address, ca=ca)
            with TestClient(Dashboard(config).app(), follow_redirects=False) as client:
                refused = _sign_in(client, "not-a-token")
                accepted = _sign_in(client, tokens[HARNESS_VIEWER])
                return refused, accepted, client.get("/carriers").text

        refused, accepted, carriers = await asyncio.to_thread(browse)
    assert refused == 401
    assert accepted == 303
    assert HARNESS_VIEWER in carriers and "1 of 1 carriers' nodes are connected" in carriers
