"""The FastAPI application: routes, error mapping, guards and the lifespan that owns resources."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from app import __version__, admin, docs_pages, fastpath, logs, metrics
from app.errors import install_problem_handlers
from app.middleware import RequestLayer
from app.routes import audit, health, keys, numbers, series
from app.routes import metrics as metrics_route
from app.services import running
from app.settings import Settings, get_settings

DESCRIPTION = """
Unique, formatted, sequential document numbers (`INV-2026-000123`) for any application that
speaks HTTP. Authenticate with `Authorization: Bearer <key>`; errors are
`application/problem+json` (RFC 9457) with a stable `type`.
"""


class Docnum(FastAPI):
    """FastAPI with the request layer (app.middleware) outside all of FastAPI's own middleware,
    so the lean path's requests pass through nothing else."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.limits = settings
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        return RequestLayer(
            super().build_middleware_stack(),
            state=self.state,
            observe=metrics.observe_request,
            max_body_bytes=self.limits.max_body_bytes,
            max_concurrent=self.limits.max_concurrent_requests,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with logs.background_writer(settings):
            async with running(settings) as services:
                app.state.services = services
                yield

    app = Docnum(
        settings,
        title="Docnum",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    for module in (health, series, numbers, keys, audit):
        app.include_router(module.router)
    app.include_router(metrics_route.router)
    docs_pages.install(app)
    admin.install(app, settings)
    fastpath.check_declared(numbers.router.routes)
    return app
