"""Headless Chromium for the console's browser tests: Debian's chromium, driven by its chromedriver.

No browser is downloaded: the tests skip (with the command to run) when the Debian packages
are missing. Screenshots go to `test-artifacts/screenshots/` (git-ignored).
"""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"
DESKTOP = (1280, 900)
PHONE = (390, 844)


def need_chromium() -> None:
    """Skip unless Debian's chromium and chromium-driver are installed (and selenium is)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium")


@contextmanager
def chromium(size: tuple[int, int] = DESKTOP, *, dark: bool = False) -> Iterator[object]:
    """A fresh headless Chromium (its own profile), closed afterwards."""
    need_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="llm2mqtt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
        "--hide-scrollbars",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_window_size(*size)
        if dark:
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: object, name: str) -> Path:
    """Save the whole page (its full height) as test-artifacts/screenshots/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    width = driver.execute_script("return window.innerWidth")  # type: ignore[attr-defined]
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 2400)")  # type: ignore[attr-defined]
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]
    return path
