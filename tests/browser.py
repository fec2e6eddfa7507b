"""Headless Chromium for the dashboard's browser tests, driven by Selenium through Debian's chromedriver.

Debian's `chromium` and `chromium-driver` packages (.ci/run installs them); the driver path is given, so
Selenium Manager never looks anything up on the network. Missing: the test skips, or fails in CI
(tests.services.require)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.services import require

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def start_chromium(profile: Path, *, javascript: bool = True, size: tuple[int, int] = (1280, 900)):
    """A headless Chromium with its own profile directory; the caller quits it."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        require("Chromium", f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    os.environ.setdefault("SE_AVOID_STATS", "true")  # no usage statistics sent by Selenium
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator:
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
