"""``/docs`` (Swagger UI) and ``/redoc`` served from files Ketnoi ships, so the API's
documentation renders in an office without internet. Both are the projects' own
distribution files (``swagger-ui-dist`` 5.35.0, ``redoc`` 2.5.4), committed under
``static/`` with their versions in the folder names and their licences beside them; the
Swagger UI on PyPI is too old to read OpenAPI 3.1. Their Content-Security-Policy (no
image, script or style from anywhere else) is ``hardening.DOCS_CSP``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
SWAGGER_UI = STATIC / "swagger-ui-5.35.0"
REDOC = STATIC / "redoc-2.5.4"
SWAGGER_PREFIX = "/assets/swagger-ui"
REDOC_PREFIX = "/assets/redoc"


def serve_docs(app: FastAPI) -> None:
    """Add ``/docs`` and ``/redoc`` to ``app`` with every asset served locally."""
    app.mount(SWAGGER_PREFIX, StaticFiles(directory=str(SWAGGER_UI)), name="swagger-ui")
    app.mount(REDOC_PREFIX, StaticFiles(directory=str(REDOC)), name="redoc")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            swagger_js_url=f"{SWAGGER_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_PREFIX}/favicon-32x32.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            redoc_js_url=f"{REDOC_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{SWAGGER_PREFIX}/favicon-32x32.png",
            with_google_fonts=False,
        )
