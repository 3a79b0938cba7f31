"""The API docs served offline: Swagger UI at ``/docs`` and Redoc at ``/redoc`` with their JS and CSS from an
installed package (``fastapi-offline`` ships Swagger UI 5 and Redoc 2), never from a CDN, so the docs work on a
machine with no way out. Also the site's favicon.

FastAPI's own ``/docs`` and ``/redoc`` load their assets from a CDN and are blank offline: the app is built with
``docs_url=None, redoc_url=None`` and :func:`install_docs` serves them instead. None of these routes needs a key:
the pages hold no data, and the schema at ``openapi_url`` is public as FastAPI serves it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from baton.server.state import STATIC_DIR

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs-assets"
"""Where the package's files are served: ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``."""
FAVICON_URL = "/favicon.ico"
ASSETS_PACKAGE = ("fastapi_offline", "static")
"""The installed package (and its folder) that holds the docs' assets."""
FAVICON_MEDIA_TYPE = "image/vnd.microsoft.icon"
DOCS_CSP = "img-src 'self' data:"
"""The docs pages' Content-Security-Policy: Redoc draws its maker's logo from cdn.redoc.ly (no option turns it off);
with this the browser never asks another host for an image, and the logo's own error handler hides it."""


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (Swagger UI and its OAuth2 redirect), ``/redoc``, their assets under ``/docs-assets/``,
    ``/favicon.ico`` on ``app``, all without auth and without any other host.

    ``app`` must be built with ``docs_url=None`` and ``redoc_url=None``: FastAPI's own pages would answer first.
    """
    # 1. check inputs: FastAPI registers its CDN pages in its constructor, ahead of any route added here
    for name in ("docs_url", "redoc_url"):
        if getattr(app, name) is not None:
            raise ValueError(f"`{name}` must be None when install_docs serves the docs, got {getattr(app, name)!r}")
    if app.openapi_url is None:
        raise ValueError("`openapi_url` must be set: the docs read the schema from it, got None")
    openapi_url = app.openapi_url
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or f"{DOCS_URL}/oauth2-redirect"

    # 2. the assets, from the installed package (StaticFiles answers GET and HEAD, with ETags)
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    # 3. the pages; a root_path (the app behind a proxy under a prefix) prefixes every URL they name
    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        # validatorUrl off: Swagger UI would otherwise fetch a badge from validator.swagger.io
        parameters = {"validatorUrl": None, **(app.swagger_ui_parameters or {})}
        return _offline(get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=root + FAVICON_URL,
            oauth2_redirect_url=root + oauth2_redirect_url,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        ))

    @app.get(oauth2_redirect_url, include_in_schema=False)
    def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _offline(get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=root + FAVICON_URL,
            with_google_fonts=False,  # a font from Google would be another host
        ))

    # 4. the favicon (GET and HEAD: FastAPI's GET routes do not answer HEAD)
    @app.api_route(FAVICON_URL, methods=["GET", "HEAD"], include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.ico", media_type=FAVICON_MEDIA_TYPE)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
