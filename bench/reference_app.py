"""The references Docnum is measured against, served by uvicorn exactly as ``docnum serve`` is.

``/constant`` answers a fixed JSON body without reading the request: the most a FastAPI process
can serve on this machine (the framework ceiling). ``/nextval`` takes one value from a
PostgreSQL sequence through an asyncpg pool built like Docnum's (same helper, same settings):
the cost of a bare ``nextval`` behind HTTP, with no authentication, validation or formatting.
"""

import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, Response

from app.database import create_pool
from app.settings import get_settings

SEQUENCE = "bench_nextval"
NEXTVAL = f"SELECT nextval('{SEQUENCE}')"
CREATE_SEQUENCE = f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} AS bigint"
CONSTANT = json.dumps(
    {"series": "constant", "number": "INV-2026-0000001", "value": 1, "period": "2026"}
).encode()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    assert settings.database_url, "the reference app needs DATABASE_URL"
    pool = await create_pool(settings.database_url, settings)
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


# FastAPI's own OpenTelemetry off, as in Docnum (app.main): it reads the environment on every
# request, and a reference that paid for it would flatter every ratio measured against it.
app = FastAPI(
    title="Docnum benchmark references",
    lifespan=lifespan,
    telemetry={"tracing": False, "metrics": False, "logs": False},
)


@app.get("/readyz")
async def ready() -> Response:
    return Response(b'{"status": "ready"}', media_type="application/json")


@app.api_route("/constant", methods=["GET", "POST"])
async def constant() -> Response:
    return Response(CONSTANT, media_type="application/json")


@app.post("/nextval")
async def nextval(request: Request) -> Response:
    value = await request.app.state.pool.fetchval(NEXTVAL)
    return Response(json.dumps({"value": value}).encode(), media_type="application/json")
