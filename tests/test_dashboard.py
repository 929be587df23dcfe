"""The dashboard in a real headless browser: Debian's chromium, driven by selenium through the system
chromedriver, against the cluster ``raftkv cluster`` runs (real processes on free ports).

The page loads without console errors, shows three members and one leader, and after the kill button on the
leader shows a new leader. Screenshots go to ``artifacts/dashboard/`` (ignored by git; CI keeps them).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from raftkv_harness.cluster import HOST

CHROMIUM: Final = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER: Final = shutil.which("chromedriver")
ARTIFACTS: Final = Path(__file__).resolve().parent.parent / "artifacts" / "dashboard"
START_TIMEOUT: Final = 60.0  # seconds for `raftkv cluster` to print the dashboard's address
PAGE_TIMEOUT: Final = 30.0  # seconds for the page to show a leader, and a new one after the kill
STOP_TIMEOUT: Final = 30.0

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no chromium and chromedriver on PATH (apt-get install chromium chromium-driver; .ci/run does)",
)


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now (``raftkv cluster`` takes a base)."""
    for _ in range(1000):
        base = random.SystemRandom().randrange(20000, 30000)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind((HOST, port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def read_line_with(process: subprocess.Popen[bytes], prefix: str, timeout: float) -> str:
    """The rest of the first line ``process`` prints that starts with ``prefix``, waiting at most ``timeout``
    seconds (unbuffered reads: a line already read into a buffer would not wake ``select``)."""
    assert process.stdout is not None
    fd, printed, end = process.stdout.fileno(), b"", time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        printed += chunk
        for line in printed.decode().splitlines(keepends=True):
            if line.startswith(prefix) and line.endswith("\n"):
                return line.removeprefix(prefix).strip()
    raise AssertionError(f"`raftkv cluster` printed no {prefix!r} line in {timeout}s: {printed.decode()}")


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    """The dashboard of a fresh ``raftkv cluster`` of three nodes, with its buttons; Ctrl-C stops it."""
    base = consecutive_free_ports(3)
    command = [sys.executable, "-m", "raftkv", "cluster", "--nodes", "3", "--base-port", str(base)]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "cluster")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield read_line_with(process, "dashboard: ", START_TIMEOUT)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    if os.environ.get("RAFTKV_DASHBOARD_SCREENSHOT"):  # how docs/dashboard.png is made
        browser.save_screenshot(os.environ["RAFTKV_DASHBOARD_SCREENSHOT"])
