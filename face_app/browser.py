"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium: for the browser tests, the
latency bench and the README screenshot."""

from __future__ import annotations

import shutil
import socket
import time

BROWSER_MISSING = "chromium / chromium-driver not installed (make test installs them with apt-get)"


def browser_available() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def chromium_driver(width: int = 1280, height: int = 900, network_log: bool = False):
    """A headless Chromium WebDriver; network_log keeps DevTools network events for driver.get_log('performance')."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps"):
        options.add_argument(flag)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def open_tab(driver, name: str) -> None:
    tab = wait_for(lambda: driver.find_elements("xpath", f"//button[@role='tab' and contains(., '{name}')]"))[0]
    tab.click()
