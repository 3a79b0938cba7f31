"""The API docs work with no way out of the machine: ``/docs`` and ``/redoc`` name only this server's own assets,
every one of them answers with its media type and without a key, and Swagger UI renders in headless Chromium with
every other host blocked. Also the favicon, and ``HEAD`` on the playground."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from baton.config import EngineConfig
from baton.server import ServerConfig
from tests.e2e.conftest import running_server
from tests.e2e.test_playground import ARTIFACTS, chromium  # noqa: F401 (a fixture, used by name)

SHAPES_ENGINE = EngineConfig(models=("shapes",), device="cpu")
KIND_MEDIA_TYPES = {"script": ("text/javascript", "application/javascript"), "stylesheet": ("text/css",),
                    "icon": ("image/",)}


@pytest.fixture(scope="module")
def server() -> str:
    """Auth on: the docs must still answer without a key (they hold no data)."""
    with running_server(SHAPES_ENGINE, ServerConfig(api_keys=("docs-key",))) as url:
        yield url


class _Assets(HTMLParser):
    """The URLs a page loads: scripts, stylesheets and icons, each with its kind."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.found.append(("script", attributes["src"]))
        elif tag == "link" and attributes.get("href"):
            rel = (attributes.get("rel") or "").split()
            self.found.append(("stylesheet" if "stylesheet" in rel else "icon" if "icon" in rel else "other",
                               attributes["href"]))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_name_only_local_assets(server, page):
    answer = httpx.get(server + page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(answer.text)
    kinds = {kind for kind, _ in parser.found}
    assert {"script", "icon"} <= kinds, parser.found
    assert page != "/docs" or "stylesheet" in kinds
    # no URL in the page, not even inside its inline script, names another host
    assert "//" not in answer.text.replace("http://127.0.0.1", ""), "the page names another host"
    for kind, url in parser.found:
        absolute = urljoin(server + page, url)
        assert urlsplit(absolute).netloc == urlsplit(server).netloc, url
        asset = httpx.get(absolute)  # no key
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(KIND_MEDIA_TYPES[kind]), (url, asset.headers["content-type"])
        assert len(asset.content) > 100, url


def test_swagger_assets_oauth_redirect_and_schema_answer_without_a_key(server):
    for path, media_type in [("/docs-assets/swagger-ui-bundle.js", "text/javascript"),
                             ("/docs-assets/swagger-ui.css", "text/css"),
                             ("/docs-assets/redoc.standalone.js", "text/javascript"),
                             ("/docs/oauth2-redirect", "text/html"),
                             ("/openapi.json", "application/json")]:
        answer = httpx.get(server + path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(media_type), path
    assert httpx.get(server + "/v1/models").status_code == 401  # while the API itself still wants the key


def test_favicon_and_head(server):
    icon = httpx.get(server + "/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/vnd.microsoft.icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file's signature
    for path, media_type in [("/favicon.ico", "image/vnd.microsoft.icon"), ("/", "text/html")]:
        head = httpx.head(server + path)
        get = httpx.get(server + path)
        assert head.status_code == get.status_code == 200, path
        assert head.headers["content-type"].startswith(media_type), path
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(get.content), path


def test_docs_render_offline_in_chromium(server, chromium):  # noqa: F811 (the imported fixture)
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def only_this_server(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            page.goto(server + "/docs")
            title = page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
            assert "baton" in title.inner_text()
            page.wait_for_selector(".swagger-ui .opblock", timeout=10_000)  # the operations are listed
            # the stylesheet applied: Swagger UI's CSS lays the operation blocks out with a border
            assert page.eval_on_selector(".swagger-ui .opblock", "e => getComputedStyle(e).borderTopStyle") == "solid"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "docs.png"))

            page.goto(server + "/redoc")
            heading = page.wait_for_selector(".api-info h1", timeout=20_000)
            assert "baton" in heading.inner_text()
            page.screenshot(path=str(ARTIFACTS / "redoc.png"))
        finally:
            browser.close()
    assert blocked == []  # nothing even tried to reach another host
