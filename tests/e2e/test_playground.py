"""The web playground in headless Chromium (Debian's, driven by Playwright): type a prompt, generate, see the image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from baton.server import ServerConfig
from tests.e2e.conftest import running_server

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed here when missing (the test setup owns its dependencies)."""
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, capture_output=True).returncode != 0:  # a fresh machine may need the lists
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(install, capture_output=True)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed and could not be installed (apt-get as root)")
    return path


def test_generate_from_the_playground(chromium):
    from playwright.sync_api import sync_playwright

    with running_server(config=ServerConfig(api_keys=("play-key",))) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.fill("#apikey", "play-key")
            page.dispatch_event("#apikey", "change")
            page.wait_for_function("document.getElementById('model').options.length === 1", timeout=10_000)
            assert page.input_value("#model") == "tiny-sd15"  # listed once the key was given
            page.fill("#prompt", "a blue square on a black background")
            page.fill("#steps", "8")
            page.fill("#size", "64x64")
            page.fill("#count", "2")
            page.click("#generate")
            page.wait_for_selector("#gallery img", timeout=60_000)
            images = page.locator("#gallery img")
            assert images.count() == 2
            assert images.first.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]") == [
                True, 64, 64
            ]
            assert "done in" in page.inner_text("#status")
            page.wait_for_function("document.getElementById('live-rate').textContent !== '–'", timeout=10_000)
            assert float(page.inner_text("#live-rate")) > 0  # the live panel reads the server's throughput
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "playground.png").stat().st_size > 1000
