"""The dashboard in a real headless Chromium, against a real coordinator and nodes on loopback.

The coordinator (mutual TLS on its main port, bearer tokens on its operator port) and three
carriers' nodes run in this process; the dashboard runs as ``oversight dashboard`` in a process
of its own, a client of the operator port; Chromium is Debian's, driven by Selenium through
Debian's chromedriver. One carrier has planted small groups (tests/integration/planted.py), so
a query by state has a withheld cell (WY: 3 members) and unreliable ones (fewer than 30
members).

- a viewer signs in, sees no launch form, and a launch posted anyway is refused by the operator
  API (PERMISSION_DENIED shown);
- an operator launches a round by month from the page, watches it to its end, finds the trend
  chart, downloads the CSV and finds it is the round's (checked against the API);
- a round by state shows withheld badges and unreliable flags;
- a scheduled suite (on a clock moved by hand) whose second run revises February: the suite's
  page lists both revisions, marks the latest, says how the month moved and draws the trend.

Screenshots go to ``$FEDOVERSIGHT_ARTEFACTS`` (default ``test-artefacts/dashboard``). Without
Chromium the test skips with the reason, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coordinator.combine import PROGRAM_SCOPE
from coordinator.schedule import ManualClock
from fedoversight.dimensions import Dimension
from fedoversight.testing import TOKEN_OPERATOR, VIEWER, SimulatedFederation
from tests.integration import planted
from tests.integration.test_schedule import (
    EXACT,
    FIRST_DUE,
    SCHEDULE,
    SECOND_DUE,
    SUITE,
    early_extract,
)
from tests.integration.test_trust import small, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PERIOD = "2026-01:2026-03"
#: Longest wait for a page to show what it should.
WAIT = 30.0

pytestmark = pytest.mark.xdist_group("browser")


def _browser_or_skip() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (
            f"the browser tests need {', '.join(missing)}"
            " (Debian: apt-get install chromium chromium-driver; pip install selenium)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def artefacts() -> Path:
    base = os.environ.get("FEDOVERSIGHT_ARTEFACTS")
    path = Path(base) if base else ROOT / "test-artefacts"
    path = path / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def planted_carriers(federation_data: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Three small carriers, copied; the first has the planted groups."""
    dirs = {}
    for carrier_id, source in small(federation_data, 3).items():
        dirs[carrier_id] = tmp_path / "data" / carrier_id
        shutil.copytree(source, dirs[carrier_id])
    planted.plant(dirs[sorted(dirs)[0]])
    return dirs


class Dashboard:
    """``oversight dashboard`` in a process of its own, on a free loopback port."""

    def __init__(self, coordinator: str, ca: Path, log: Path) -> None:
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from oversight_sim.cli import main; main()",
                "dashboard",
                "--coordinator",
                coordinator,
                "--ca",
                str(ca),
                "--listen",
                "127.0.0.1:0",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("dashboard on "):
            self.stop()
            raise AssertionError(f"the dashboard did not start: {line!r}; log: {log}")
        self.url = line.removeprefix("dashboard on ").strip()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


class Browser:
    def __init__(self, downloads: Path, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1360,1000",
            f"--user-data-dir={self.profile.name}",
        ):
            options.add_argument(flag)
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
            },
        )
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        self.downloads = downloads
        self.shots = shots

    def quit(self) -> None:
        self.driver.quit()
        self.profile.cleanup()

    def shot(self, name: str) -> Path:
        """A screenshot of the whole page (beyond the window)."""
        data = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def wait(self, check: Callable[[], object], what: str, timeout: float = WAIT) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.2)
        self.shot(f"timeout-{what.replace(' ', '-')}")
        raise AssertionError(f"waited {timeout:.0f}s for {what}")

    def text(self, selector: str) -> str:
        """The text of the first element matching ``selector``, read again should the page
        reload under it (a round's page reloads itself when its round ends)."""
        from selenium.common.exceptions import StaleElementReferenceException

        def read() -> str | None:
            try:
                found = self.css(selector)
                return str(found[0].text) if found else None  # type: ignore[attr-defined]
            except StaleElementReferenceException:
                return None

        return str(self.wait(read, f"the text of {selector}"))

    def css(self, selector: str) -> list[object]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def sign_in(self, url: str, token: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(f"{url}/login")
        self.driver.find_element(By.ID, "token").send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        self.wait(lambda: self.css("#who"), "the signed-in page")

    def sign_out(self) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, "#logout button").click()
        self.wait(lambda: self.css("#login-form"), "the login page")

    def launch(self, url: str, metric: str, by: str) -> str:
        """Launch a round from the form; the round's id (from the page it lands on)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        self.driver.get(f"{url}/launch")
        Select(self.driver.find_element(By.ID, "metric")).select_by_value(metric)
        period = self.driver.find_element(By.ID, "period")
        period.clear()
        period.send_keys(PERIOD)
        self.driver.find_element(By.CSS_SELECTOR, f'input[name="by"][value="{by}"]').click()
        self.driver.find_element(By.ID, "launch").click()
        self.wait(lambda: "/rounds/r-" in self.driver.current_url, "the round page")
        return str(self.driver.current_url.rsplit("/", 1)[1])

    def severe_console(self) -> list[str]:
        """Script errors (a script refused by the page's policy, a chart that failed) logged
        since the last call; refusals the test provoked (403) are expected."""
        return [
            str(e["message"])
            for e in self.driver.get_log("browser")
            if e.get("level") == "SEVERE"
            and "favicon" not in str(e["message"])
            and "status of 403" not in str(e["message"])
        ]


@pytest.fixture
def browser(tmp_path: Path, artefacts: Path) -> Iterator[Browser]:
    _browser_or_skip()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    session = Browser(downloads, artefacts)
    try:
        yield session
    finally:
        session.quit()


def viewer_session(b: Browser, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    b.sign_in(url, token)
    assert b.css("#who")[0].get_attribute("data-role") == "viewer"  # type: ignore[attr-defined]
    assert not b.css("#nav-launch"), "a viewer's pages link to no launch form"
    b.driver.get(f"{url}/carriers")
    assert len(b.css("#carriers tbody tr")) == 3
    assert "policies" in b.driver.find_element(By.ID, "policy-note").text.lower()
    b.shot("viewer-carriers")
    b.driver.get(f"{url}/launch")
    assert b.css("#no-launch") and not b.css("#launch-form")
    b.shot("viewer-launch")
    # A launch posted anyway (the session's own CSRF token, a valid request): the operator API
    # refuses it for the viewer's role, and the page says so.
    b.driver.execute_script(
        """
        const form = document.createElement("form");
        form.method = "post"; form.action = "/launch";
        const fields = {csrf: document.querySelector("#logout input[name=csrf]").value,
                        metric: "enrollment.member_months", period: arguments[0]};
        for (const [name, value] of Object.entries(fields)) {
          const input = document.createElement("input");
          input.type = "hidden"; input.name = name; input.value = value;
          form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();
        """,
        PERIOD,
    )
    message = b.wait(lambda: b.css("#launch-message"), "the refusal")
    text = message[0].text  # type: ignore[index]
    assert "PERMISSION_DENIED" in text and "refused" in text, text
    b.shot("viewer-refused")
    b.driver.get(f"{url}/rounds")
    assert not b.css("#rounds"), "the viewer's refused launch made no round"
    b.sign_out()


def operator_session(
    b: Browser, url: str, token: str, carriers: list[str]
) -> tuple[str, str, Path]:
    """Launch a round by month and one by state; the first's CSV."""
    from selenium.webdriver.common.by import By

    b.sign_in(url, token)
    assert b.css("#nav-launch")
    trend_round = b.launch(url, "cost.pmpm", "month")
    # Launched for the office's default purpose, which the round's page states.
    assert "plan-cost-oversight" in b.text("#purpose")
    # Its progress, live: every carrier of the round listed, each ending answered.
    rows = b.css("#progress tbody tr")
    assert len(rows) == 3
    b.shot("operator-round-progress")
    b.wait(lambda: b.css("#download-csv"), "the round's end")
    states = [e.text for e in b.css("#progress .cstate")]  # type: ignore[attr-defined]
    assert states == ["answered"] * 3, states
    assert b.driver.find_element(By.ID, "round-state").text == "complete"
    # The trend chart: a Plotly plot drawn from the served plotly.js, one line per carrier and
    # the program's.
    chart = b.wait(lambda: b.css("#query-0 .chart-trend.js-plotly-plot"), "the trend chart")
    # The traces drawn, by what each says it draws (coordinator.charts: "program", "value").
    scopes = b.driver.execute_script(
        "return arguments[0].data.filter(t => t.meta && ['program', 'value'].includes("
        "t.meta.role)).map(t => t.meta.scope)",
        chart[0],  # type: ignore[index]
    )
    assert sorted(scopes) == sorted([PROGRAM_SCOPE, *carriers]), scopes
    assert b.css("#query-0 .chart-trend .main-svg")
    assert (
        b.css("#legend .flag.unreliable") and "NCHS" in b.driver.find_element(By.ID, "legend").text
    )
    b.shot("operator-round-trend")
    b.driver.find_element(By.ID, "download-csv").click()
    path = b.downloads / f"{trend_round}.csv"
    b.wait(lambda: path.exists() and path.stat().st_size > 0, "the CSV download")
    # The round by state: the planted carrier's WY cell withheld, small states unreliable.
    state_round = b.launch(url, "cost.pmpm", "state")
    b.wait(lambda: b.css("#download-csv"), "the state round's end")
    withheld = b.css("#query-0 table.values td.withheld .badge.withheld")
    unreliable = b.css("#query-0 table.values td.unreliable .flag.unreliable")
    assert withheld, "a withheld value is marked"
    assert unreliable, "an unreliable value is flagged"
    counts = b.driver.find_element(By.CSS_SELECTOR, "#query-0 .counts").text
    assert "withheld" in counts and "unreliable" in counts
    # A value both withheld and unreliable is not shown: the two marks never share a cell.
    assert not b.css("td.withheld.unreliable")
    b.shot("operator-round-by-state")
    # The carriers' page now shows each carrier's policy as its latest answer described it.
    b.driver.get(f"{url}/carriers")
    methods = [e.text for e in b.css("#carriers td.policy-method")]  # type: ignore[attr-defined]
    assert methods == ["cell-key perturbation"] * 3, methods
    assert "11 members" in b.driver.find_element(By.ID, "carriers").text
    b.shot("operator-carriers-policies")
    assert not b.severe_console(), b.severe_console()
    return trend_round, state_round, path


async def test_viewer_and_operator_in_a_real_browser(
    planted_carriers: dict[str, Path], tmp_path: Path, browser: Browser
) -> None:
    async with SimulatedFederation(planted_carriers, tmp_path / "run", operator_port=True) as fed:
        assert fed.pki is not None and fed.client is not None
        operator_kit = fed.pki.operators[TOKEN_OPERATOR]
        viewer_kit = fed.pki.operators[VIEWER]
        assert operator_kit.token is not None and viewer_kit.token is not None
        dashboard = await asyncio.to_thread(
            Dashboard, fed.operator_address, operator_kit.ca_cert, tmp_path / "dashboard.log"
        )
        try:
            url = dashboard.url
            await asyncio.to_thread(
                viewer_session, browser, url, viewer_kit.token.read_text().strip()
            )
            trend_round, state_round, csv_path = await asyncio.to_thread(
                operator_session,
                browser,
                url,
                operator_kit.token.read_text().strip(),
                sorted(planted_carriers),
            )
            outcome = await fed.client.get_round(trend_round)
            by_state = await fed.client.get_round(state_round)
        finally:
            await asyncio.to_thread(dashboard.stop)
    # The CSV downloaded is the round's: its id, and the program's PMPM by month as the API
    # gives it.
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["round_id"] for r in rows} == {trend_round}
    assert {r["period"] for r in rows} == {PERIOD}
    program = next(t for t in outcome.tables if t.scope == PROGRAM_SCOPE)
    expected = {dict(c.key)[Dimension.MONTH]: c.figure("allowed_pmpm").value for c in program.cells}
    got = {
        r["month"]: float(r["value"])
        for r in rows
        if r["scope"] == PROGRAM_SCOPE and r["statistic"] == "allowed_pmpm"
    }
    assert set(got) == set(expected) == {"2026-01", "2026-02", "2026-03"}
    for month, value in expected.items():
        assert math.isclose(got[month], value, rel_tol=1e-12), month
    carriers = {r["scope"] for r in rows} - {PROGRAM_SCOPE}
    assert carriers == set(planted_carriers)
    # The state round's withheld marks are the API's: the planted carrier's WY cell.
    victim = sorted(planted_carriers)[0]
    table = next(t for t in by_state.tables if t.scope == victim)
    wy = next(c for c in table.cells if dict(c.key)[Dimension.STATE] == "WY")
    assert any(s.status.withheld for s in wy.stats)


def suite_session(b: Browser, url: str, token: str, first: str, second: str) -> None:
    """The suite's page: February's two revisions, the latest marked, and the trend."""
    from selenium.webdriver.common.by import By

    b.sign_in(url, token)
    b.driver.get(f"{url}/suites/{SUITE}")
    b.wait(lambda: b.css("#chart-suite-trend.js-plotly-plot .main-svg"), "the suite's trend")
    february = b.css('#revisions tr[data-month="2026-02"]')
    assert [r.get_attribute("data-revision") for r in february] == ["1", "2"]  # type: ignore[attr-defined]
    assert first in february[0].text and second in february[1].text  # type: ignore[attr-defined]
    assert "latest" in february[1].text and "latest" not in february[0].text  # type: ignore[attr-defined]
    moved = february[1].find_element(By.CSS_SELECTOR, ".moved").text  # type: ignore[attr-defined]
    assert moved.startswith("+"), moved
    b.shot("viewer-suite-revisions")
    b.driver.get(f"{url}/rounds")
    assert len(b.css(f'#rounds a[href="/suites/{SUITE}"]')) == 2
    b.shot("viewer-rounds")
    assert not b.severe_console(), b.severe_console()


async def test_a_suites_two_revisions_of_a_month_in_a_real_browser(
    federation_data: dict[str, Path], tmp_path: Path, browser: Browser
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
        async for _ in fed.client.watch(launched[(SUITE, FIRST_DUE)], timeout=120):
            pass
        replacement = dirs[late] / "medical_claims.parquet.new"
        shutil.copyfile(full, replacement)
        replacement.replace(dirs[late] / "medical_claims.parquet")
        clock.set(SECOND_DUE)
        assert await wait_for(lambda: len(launched) == 2)
        async for _ in fed.client.watch(launched[(SUITE, SECOND_DUE)], timeout=120):
            pass
        kit = fed.pki.operators[VIEWER]
        assert kit.token is not None
        dashboard = await asyncio.to_thread(
            Dashboard, fed.operator_address, kit.ca_cert, tmp_path / "dashboard.log"
        )
        try:
            await asyncio.to_thread(
                suite_session,
                browser,
                dashboard.url,
                kit.token.read_text().strip(),
                launched[(SUITE, FIRST_DUE)],
                launched[(SUITE, SECOND_DUE)],
            )
        finally:
            await asyncio.to_thread(dashboard.stop)
