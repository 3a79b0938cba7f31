"""The web playground in headless Chromium (Debian's, driven by Playwright), against the default served model
(``shapes``) with auth on: the page asks for the key and lists the models as it is typed, starts from a prompt the
model draws well, shows small images enlarged and sharp, captions each with what reproduces it, and fits a phone.
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from baton.config import EngineConfig
from baton.server import ServerConfig
from baton.shapes.detector import read_scene
from baton.shapes.prompts import FreeFormPrompt, score_named
from tests.e2e.conftest import running_server

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
KEY = "play-key"
SHAPES_ENGINE = EngineConfig(models=("shapes",), device="cpu")
EXAMPLE = FreeFormPrompt("short", "two big yellow circles at the top right", colour="yellow", shape="circle",
                         size="large", count=2, position="top right")
"""The shapes model's ``example_prompt`` (its baton.json), with the attributes it names."""
MODELS_LISTED = "document.getElementById('model').options.length > 0"


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


@pytest.fixture(scope="module")
def server() -> str:
    """The default served model behind an API key."""
    with running_server(SHAPES_ENGINE, ServerConfig(api_keys=(KEY,))) as url:
        yield url


@pytest.fixture
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    assert (ARTIFACTS / name).stat().st_size > 1000


def _pixels(page, index: int) -> tuple[bytes, np.ndarray]:
    src = page.locator("#gallery img").nth(index).get_attribute("src")
    data = base64.b64decode(src.split(",", 1)[1])
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_generate_from_the_playground(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server)

    # 1. no key yet: the page says so, plainly
    page.wait_for_selector("#auth:not([hidden])", timeout=10_000)
    assert "needs an API key" in page.inner_text("#auth")
    assert page.locator("#model option").count() == 0
    _shot(page, "playground-key-needed.png")

    # 2. typing the key lists the models while the field still has focus: no `change` event, no blur
    page.locator("#apikey").press_sequentially(KEY)
    page.wait_for_function(MODELS_LISTED, timeout=10_000)
    assert page.evaluate("document.activeElement.id") == "apikey"
    assert page.locator("#auth").is_hidden()
    assert page.input_value("#model") == "shapes"

    # 3. the default prompt is the model's example (baton.json): a prompt as people type it
    prompt = page.input_value("#prompt")
    assert prompt == EXAMPLE.text

    # 4. two images of one request, seed fixed, the model's default size (64x64)
    page.fill("#count", "2")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 2", timeout=60_000)
    assert "done in" in page.inner_text("#status")
    images = page.locator("#gallery img")
    for i in range(2):
        img = images.nth(i)
        img.evaluate("img => img.decode()")
        natural, shown, rendering = img.evaluate(
            "img => [[img.naturalWidth, img.naturalHeight], img.getBoundingClientRect().width,"
            " getComputedStyle(img).imageRendering]")
        assert natural == [64, 64]
        assert shown >= 256  # enlarged by a whole factor...
        assert rendering == "pixelated"  # ...with sharp pixels
    # each caption says what reproduces its image: the request's seed and the image's place in it
    assert page.locator("#gallery figcaption .seed").all_inner_texts() == [
        "seed 7, image 1 of 2", "seed 7, image 2 of 2"
    ]

    # 5. the captions tell the truth: the same request gives the same images in the same order
    answer = httpx.post(f"{server}/v1/generate", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                        json={"prompt": prompt, "num_images": 2, "seed": 7, "steps": int(page.input_value("#steps"))})
    assert answer.status_code == 200
    shown = [_pixels(page, i) for i in range(2)]
    again = [np.asarray(Image.open(io.BytesIO(base64.b64decode(e["b64_json"]))).convert("RGB"))
             for e in answer.json()["images"]]
    for (_, pixels), expected in zip(shown, again):
        np.testing.assert_array_equal(pixels, expected)

    # 6. and the model draws the default prompt: the detector reads every attribute it names from both images
    for _, pixels in shown:
        assert score_named(EXAMPLE, read_scene(pixels)) == dict.fromkeys(EXAMPLE.named, True)

    # the live panel reads the server's throughput once a second: it shows the images just made at its next read
    page.wait_for_function("parseFloat(document.getElementById('live-rate').textContent) > 0", timeout=10_000)
    _shot(page, "playground.png")


def test_playground_fits_a_phone(server, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server)
    page.wait_for_selector("#auth:not([hidden])", timeout=10_000)  # the longest message, wrapped
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.locator("#apikey").press_sequentially(KEY)
    page.wait_for_function(MODELS_LISTED, timeout=10_000)
    page.fill("#count", "2")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 2", timeout=60_000)
    widths = page.locator("#gallery img").evaluate_all("imgs => imgs.map(img => img.getBoundingClientRect().width)")
    assert all(width >= 256 for width in widths)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    _shot(page, "playground-phone.png")
    context.close()


def test_prompt_follows_the_model_list(server, browser):
    """A model's ``example_prompt`` is the default prompt; without one, a generic prompt; a typed prompt stays."""
    listing = {"id": "shapes", "example_prompt": "two small green squares at the top left on a black background"}

    def models_route(route) -> None:
        answer = route.fetch()
        if answer.status != 200:
            route.fulfill(response=answer)
            return
        body = answer.json()
        body["data"] = [{**model, **listing} for model in body["data"]]
        route.fulfill(response=answer, body=json.dumps(body))

    page = browser.new_page()
    page.add_init_script(f"localStorage.setItem('baton-api-key', {KEY!r})")  # the key a previous visit kept
    page.route("**/v1/models", models_route)
    page.goto(server)
    page.wait_for_function(MODELS_LISTED, timeout=10_000)
    assert page.input_value("#prompt") == listing["example_prompt"]

    # a model without an example (the field missing or null) gets a generic prompt, not the shapes caption
    listing.update(id="another-model", example_prompt=None)
    page.reload()
    page.wait_for_function("document.getElementById('model').value === 'another-model'", timeout=10_000)
    assert page.input_value("#prompt") == "a red fox in the snow"

    # what the user typed is kept when the models are listed again (here: the key typed anew)
    page.fill("#prompt", "my own prompt")
    page.fill("#apikey", "")
    page.wait_for_selector("#auth:not([hidden])", timeout=10_000)
    page.locator("#apikey").press_sequentially(KEY)
    page.wait_for_selector("#auth", state="hidden", timeout=10_000)
    assert page.input_value("#prompt") == "my own prompt"
