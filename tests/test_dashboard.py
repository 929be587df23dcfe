"""The dashboard in a real headless browser: Debian's chromium, driven by selenium through the system
chromedriver, against the cluster ``raftkv cluster`` runs (real processes on free ports).

The page loads without console errors, shows three members and one leader, and after the kill button on the
leader shows a new leader. Screenshots go to ``artifacts/dashboard/`` (ignored by git), the last one whether
the test passed or not.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from raftkv_harness.processes import raftkv_cluster

CHROMIUM: Final = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER: Final = shutil.which("chromedriver")
ARTIFACTS: Final = Path(__file__).resolve().parent.parent / "artifacts" / "dashboard"
PAGE_TIMEOUT: Final = 30.0  # seconds for the page to show a leader, and a new one after the kill

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no chromium and chromedriver on PATH (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    """The dashboard of a fresh ``raftkv cluster`` of three nodes, with its buttons."""
    with raftkv_cluster(tmp_path / "cluster") as cluster:
        yield cluster.dashboard


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        screenshot(driver, "last")  # what the page showed when the test ended, passed or failed
        driver.quit()


def leader_of(driver: webdriver.Chrome) -> str:
    """The leader the page names ('' for none): the one member card drawn as the leader."""
    leaders = driver.find_elements(By.CSS_SELECTOR, '.member[data-role="leader"]')
    named = driver.find_element(By.ID, "summary").get_attribute("data-leader") or ""
    return named if len(leaders) == 1 and leaders[0].get_attribute("data-member") == named else ""


def errors(driver: webdriver.Chrome) -> list[str]:
    """The console's errors since the last call (chromium's log of the page, through chromedriver)."""
    log: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry["message"] for entry in log if entry["level"] == "SEVERE"]


def shown_as(driver: webdriver.Chrome, member: str) -> str:
    """The classes of ``member``'s card: its role, or ``down`` / ``paused``."""
    card = driver.find_element(By.CSS_SELECTOR, f'.member[data-member="{member}"]')
    return card.get_attribute("class") or ""


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


@pytest.mark.slow
def test_the_dashboard_shows_the_cluster_and_a_new_leader_after_the_kill_button(
    dashboard_url: str, browser: webdriver.Chrome
) -> None:
    browser.get(dashboard_url)
    wait = WebDriverWait(browser, PAGE_TIMEOUT)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".member[data-member]")) == 3 and leader_of(d))
    screenshot(browser, "1-three-members")
    assert errors(browser) == []
    old = leader_of(browser)
    card = browser.find_element(By.CSS_SELECTOR, f'.member[data-member="{old}"]')
    killed_url = card.find_element(By.CSS_SELECTOR, ".url").text
    card.find_element(By.CSS_SELECTOR, 'button[data-action="kill"]').click()
    wait.until(lambda d: leader_of(d) not in ("", old))
    wait.until(lambda d: "down" in shown_as(d, old).split())
    screenshot(browser, "2-new-leader-after-kill")
    assert [message for message in errors(browser) if killed_url not in message] == []
    assert len(browser.find_elements(By.CSS_SELECTOR, ".member[data-member]")) == 3
