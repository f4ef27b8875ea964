"""Headless Chromium for the browser tests (Debian's chromium + chromium-driver; `make test` installs them)."""

from __future__ import annotations

import shutil

import pytest


def chromium_driver():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromium-driver not installed (make test installs them with apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
