"""The dashboard against a real coordinator, in process (the browser tests in tests/browser/
drive the pages in Chromium): WhoAmI on the operator port and signing in with it; a scheduled
suite on a clock moved by hand, whose second run revises February, shown on the suite's page
with both revisions and how the month moved."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from coordinator.client import OperatorClient, RoundOutcome
from coordinator.config import Role
from coordinator.dashboard.app import Dashboard
from coordinator.dashboard.settings import DashboardConfig
from coordinator.schedule import ManualClock
from fedoversight.dimensions import Dimension
from fedoversight.errors import AuthenticationError
from fedoversight.testing import TOKEN_OPERATOR, VIEWER, SimulatedFederation
from tests.integration.test_schedule import (
    EXACT,
    FIRST_DUE,
    SCHEDULE,
    SECOND_DUE,
    SUITE,
    early_extract,
)
from tests.integration.test_trust import small, wait_for


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
        ca = kits[VIEWER].ca_cert
        tokens = {n: kits[n].token.read_text().strip() for n in (VIEWER, TOKEN_OPERATOR)}  # type: ignore[union-attr]
        for name, role in ((VIEWER, Role.VIEWER), (TOKEN_OPERATOR, Role.OPERATOR)):
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
                accepted = _sign_in(client, tokens[VIEWER])
                return refused, accepted, client.get("/carriers").text

        refused, accepted, carriers = await asyncio.to_thread(browse)
    assert refused == 401
    assert accepted == 303
    assert VIEWER in carriers and "1 of 1 carriers' nodes are connected" in carriers


async def test_the_suite_page_shows_both_revisions_of_a_month_and_how_it_moved(
    federation_data: dict[str, Path], tmp_path: Path
) -> None:
    dirs = {
        c: Path(shutil.copytree(d, tmp_path / "data" / c))
        for c, d in small(federation_data, 2).items()
    }
    late = sorted(dirs)[0]
    full = tmp_path / "medical_claims.full.parquet"
    shutil.copyfile(dirs[late] / "medical_claims.parquet", full)
    assert early_extract(dirs[late]) > 0
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(SCHEDULE)
    clock = ManualClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    async with SimulatedFederation(
        dirs, tmp_path / "run", policy=EXACT, schedule=schedule, clock=clock, operator_port=True
    ) as fed:
        assert fed.client is not None and fed.coordinator is not None and fed.pki is not None
        launched = fed.coordinator.scheduler.launched
        clock.set(FIRST_DUE + dt.timedelta(minutes=3))
        assert await wait_for(lambda: len(launched) == 1)
        first = launched[(SUITE, FIRST_DUE)]
        async for _ in fed.client.watch(first, timeout=120):
            pass
        # February's late claims arrive; the next run computes February again.
        replacement = dirs[late] / "medical_claims.parquet.new"
        shutil.copyfile(full, replacement)
        replacement.replace(dirs[late] / "medical_claims.parquet")
        clock.set(SECOND_DUE)
        assert await wait_for(lambda: len(launched) == 2)
        second = launched[(SUITE, SECOND_DUE)]
        async for _ in fed.client.watch(second, timeout=120):
            pass
        february = {r: _pmpm(await fed.client.get_round(r), "2026-02") for r in (first, second)}
        kit = fed.pki.operators[VIEWER]
        token = kit.token.read_text().strip()  # type: ignore[union-attr]

        def browse() -> tuple[str, str]:
            config = DashboardConfig(coordinator=fed.operator_address, ca=kit.ca_cert)
            with TestClient(Dashboard(config).app(), follow_redirects=False) as client:
                assert _sign_in(client, token) == 303
                return client.get(f"/suites/{SUITE}").text, client.get(
                    f"/rounds?suite={SUITE}"
                ).text

        page, rounds = await asyncio.to_thread(browse)
    rows = {
        (m.group(1), int(m.group(2))): m.group(0)
        for m in re.finditer(
            r'<tr class="(?:latest|earlier)" data-month="([0-9-]+)" data-revision="(\d)">.*?</tr>',
            page,
            flags=re.S,
        )
    }
    assert set(rows) == {("2026-01", 1), ("2026-02", 1), ("2026-02", 2), ("2026-03", 1)}
    assert first in rows[("2026-02", 1)] and second in rows[("2026-02", 2)]
    assert "latest" in rows[("2026-02", 2)] and "latest</span>" not in rows[("2026-02", 1)]
    for revision, round_id in ((1, first), (2, second)):
        assert f"{february[round_id]:,.2f}" in rows[("2026-02", revision)]
    moved = february[second] - february[first]
    assert moved > 0  # the late claims raised February's cost
    assert f"{moved:+,.2f}" in rows[("2026-02", 2)]
    assert 'class="chart chart-trend"' in page
    assert first in rounds and second in rounds and f'href="/suites/{SUITE}"' in rounds


def _pmpm(outcome: RoundOutcome, month: str) -> float:
    program = next(t for t in outcome.tables if t.scope == "program")
    cell = next(c for c in program.cells if dict(c.key)[Dimension.MONTH] == month)
    return cell.figure("allowed_pmpm").value
