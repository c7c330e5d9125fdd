"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against a running devnet: it shows the latest final epoch and one
provider's breakdown with the values the JSON API serves, loads nothing the page's CSP
blocks, and leaves a screenshot (``test-artifacts/dashboard.png`` and the test's tmp dir).
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import EPOCH_SECONDS, devnet, posted_latest, wait_for
from validator import dashboard

__all__ = ["devnet"]  # the fixture, shared with the end-to-end test

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard.png"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,1000")


def fmt(value: int) -> str:
    """A number as the page writes it (``toLocaleString("en-US")``)."""
    return f"{value:,}"


def median(values: list[int]) -> int:
    """Written from DESIGN §8, not imported: the floored mean of the middle two if even."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2


@pytest.fixture
def browser(tmp_path: Path):  # noqa: ANN201
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (make install as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


_SNAPSHOT = """
const q = (s) => document.querySelector(s);
const text = (s) => (q(s) ? q(s).innerText : "");
const cells = (s) => [...document.querySelectorAll(s)].map(
  (tr) => [...tr.cells].map((td) => td.textContent));
return {epoch: q("#epoch-title") ? q("#epoch-title").dataset.epoch : null,
        title: text("#epoch-title"), detail: text("#epoch-detail"),
        records: cells("#epoch-records tbody tr"),
        chosen_tick: q(".tick.chosen") ? q(".tick.chosen").dataset.epoch : null,
        node: text("#node-facts"), provider: text("#provider-key"),
        committee: cells("#committee tbody tr"), formula: text("#formula"),
        record_weight: text("#record-weight")};
"""


def snapshot(driver: Any) -> dict[str, Any]:
    """What the page shows, read in one script call: the page redraws every few seconds,
    and one call runs between two redraws, never across one."""
    page: dict[str, Any] = driver.execute_script(_SNAPSHOT)
    return page


def save_screenshot(driver: Any, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 40, 800), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path)), "screenshot not written"


def test_dashboard_shows_latest_epoch_and_a_providers_breakdown(devnet, browser,  # noqa: ANN001
                                                                tmp_path: Path) -> None:
    _, urls, _, _ = devnet
    url = urls[0]
    first = wait_for("a final report with records, posted on chain",
                     lambda: (r := posted_latest(urls, min_epoch=1)) and r["records"] and r,
                     timeout=8 * EPOCH_SECONDS)

    # The page comes with the headers that keep everything but this origin out.
    with urllib.request.urlopen(url + "/", timeout=5) as response:
        assert response.headers["Content-Security-Policy"] == dashboard.CONTENT_SECURITY_POLICY
        assert response.headers["Content-Type"].startswith("text/html")
        assert b"/dashboard/app.js" in response.read()

    # 1. The epoch it shows is the latest final one, with the API's values. (A page that
    #    showed any other epoch would never satisfy epoch_view.)
    browser.get(url + "/")
    _, network = get_json(url + "/network")
    _, status = get_json(url + "/status")

    def epoch_view() -> tuple[int, int, dict, dict, int] | None:
        # The page refreshes every few seconds and epochs finalize meanwhile: take one
        # reading of the page between two readings of the API.
        _, before = get_json(url + "/epochs/latest")
        page = snapshot(browser)
        _, after = get_json(url + "/epochs/latest")
        if page["epoch"] is None or int(page["epoch"]) < before["epoch"]:
            return None  # not drawn yet, or drawn before the newest epoch was final
        _, report = get_json(f"{url}/epochs/{page['epoch']}")
        if report["chain"]["status"] not in page["detail"]:
            return None  # posted between the two readings
        return before["epoch"], int(page["epoch"]), page, report, after["epoch"]

    before, shown, page, report, after = wait_for("the page to draw the latest epoch",
                                                  epoch_view, 30)
    assert first["epoch"] <= before <= shown <= after
    assert page["chosen_tick"] == str(shown)
    assert status["signing_key"] in page["node"]
    assert f"Epoch {shown}" in page["title"]
    assert f"{len(report['signatures'])} of {network['n']} signatures" in page["title"]
    assert report["header_sha256"] in page["detail"]
    assert [r[5] for r in page["records"]] == [fmt(r["weight"]) for r in report["records"]]

    # 2. One provider's breakdown: every committee member's measurement, the medians, and
    #    the weight formula over this record's numbers, which the page recomputes exactly.
    provider = report["records"][0]["provider"]
    browser.find_element("css selector", f'#provider-table tr[data-provider="{provider}"]').click()

    def provider_view() -> tuple[dict, dict] | None:
        page = snapshot(browser)
        _, detail = get_json(f"{url}/providers/{provider}")
        record = next((r for r in page["committee"] if r[0].startswith("record")), None)
        if page["provider"] != provider or record is None \
                or record[0] != f"record, epoch {detail['epoch']}":
            return None  # not drawn yet, or drawn for an epoch before the API's answer
        return page, detail

    page, detail = wait_for("the breakdown to match the API", provider_view, 30)
    members = [r for r in page["committee"] if not r[0].startswith(("median", "record"))]
    assert len(members) == len(detail["committee"]) > 0
    for cells, obs in zip(members, detail["committee"]):
        assert cells[0] == obs["name"]
        assert cells[1] == f"{obs['heartbeats_ok']}/{obs['heartbeats_sent']}"
        assert cells[3:6] == [fmt(obs["rtt_median_us"]), fmt(obs["down_kbps"]),
                              fmt(obs["up_kbps"])]
    record = [r for r in page["committee"] if r[0].startswith("record")][0]
    assert record[2:6] == [fmt(detail[k]) for k in ("uptime_bps", "rtt_us", "down_kbps",
                                                    "up_kbps")]
    _, status = get_json(url + "/status")
    excluded = set(status["excluded"].get(str(detail["epoch"]), []))
    used = [o for o in detail["committee"]
            if o["heartbeats_sent"] > 0 and o["validator"] not in excluded]
    if "insufficient" not in detail["flag_names"]:
        median_row = [r for r in page["committee"] if r[0].startswith("median")][0]
        assert median_row[3:6] == [fmt(median([o[k] for o in used])) for k in
                                   ("rtt_median_us", "down_kbps", "up_kbps")]
    cap = network["rewards"]["throughput_cap_kbps"]
    assert f"min({fmt(detail['down_kbps'])}, {fmt(cap)})" in page["formula"]
    assert f"^{network['rewards']['uptime_exponent']}" in page["formula"]
    assert page["record_weight"] == f"{fmt(detail['weight'])} ✓ matches"

    # 3. Nothing was refused by the CSP or failed in the script.
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []

    shot = tmp_path / "dashboard.png"
    save_screenshot(browser, shot)
    ARTIFACT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)
    assert shot.stat().st_size > 10_000
    print(f"dashboard: epoch {shown}, provider {provider}, screenshot {ARTIFACT}",
          f"({time.strftime('%H:%M:%S')})")
