"""Prometheus metrics for scrapers; like the health checks, they need no API key."""

from fastapi import APIRouter, Request, Response

from app.deps import ServicesDep
from app.metrics import render

router = APIRouter(tags=["health"])

DESCRIPTION = """
Prometheus text format (OpenMetrics when the `Accept` header asks for it).

Each process reports its own metrics: with `DOCNUM_WORKERS` above 1, a scrape shows whichever
worker answered it. Run one worker per container and scrape every replica for exact numbers.
"""
EXAMPLE = """\
# HELP docnum_numbers_issued_total Numbers issued (idempotent replays excluded), by tenant id, \
series and mode.
# TYPE docnum_numbers_issued_total counter
docnum_numbers_issued_total{mode="gapless",series="invoice",tenant="1"} 42.0
# HELP docnum_db_pool_connections Open connections of the database pool, by state.
# TYPE docnum_db_pool_connections gauge
docnum_db_pool_connections{state="in_use"} 1.0
docnum_db_pool_connections{state="idle"} 9.0
"""


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    description=DESCRIPTION,
    response_class=Response,
    responses={200: {"description": "Metrics", "content": {"text/plain": {"example": EXAMPLE}}}},
)
async def get_metrics(request: Request, services: ServicesDep) -> Response:
    body, content_type = render(services.pool, request.headers.get("accept", ""))
    return Response(body, media_type=content_type)
