"""The interactive API documentation (``/docs``, ``/redoc``), working with no internet access.

FastAPI's default pages load Swagger UI, ReDoc, a favicon and Google fonts from the internet. These
pages load the same Swagger UI and ReDoc from files shipped in the ``fastapi-offline`` package and
served by this process, so they work on an isolated network and leak no visits to a CDN. A
Content-Security-Policy holds the pages to this origin, which also stops the one image ReDoc's
bundle would still fetch from its vendor's CDN.
"""

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
# Both pages start from an inline script and inject inline styles; ReDoc searches in a blob: worker.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:"
)
SWAGGER_UI_PARAMETERS = {
    # Keep the API key across reloads of the page, so trying requests is not a chore.
    "persistAuthorization": True,
    # Swagger UI would otherwise send the schema to an online validator.
    "validatorUrl": None,
}


def install(app: FastAPI) -> None:
    """Serve the pages and their assets; the app must be built with docs_url/redoc_url None."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"

    def schema_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return _same_origin_only(
            get_swagger_ui_html(
                openapi_url=schema_url(request),
                title=f"{app.title} - API",
                swagger_js_url=asset(request, "swagger-ui-bundle.js"),
                swagger_css_url=asset(request, "swagger-ui.css"),
                swagger_favicon_url=asset(request, "favicon.png"),
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return _same_origin_only(
            get_redoc_html(
                openapi_url=schema_url(request),
                title=f"{app.title} - API reference",
                redoc_js_url=asset(request, "redoc.standalone.js"),
                redoc_favicon_url=asset(request, "favicon.png"),
                with_google_fonts=False,
            )
        )


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
