"""Prometheus metrics for scrapers. They need no API key; each tenant's series need the metrics
token.

A scrape without an ``Authorization`` header gets sums over tenants and series (see
``app.metrics``). A scrape that presents ``DOCNUM_METRICS_TOKEN`` as a Bearer token also gets
each tenant's series. Any other ``Authorization`` (a wrong token, an API key, or any token when
none is configured) is a 401, so a scraper with a mistyped token fails loudly instead of quietly
losing the series.
"""

import hmac

from fastapi import APIRouter, Request, Response

from app.deps import ServicesDep
from app.http_errors import problem_responses
from app.metrics import render
from app.problems import Unauthorized

router = APIRouter(tags=["health"])

DESCRIPTION = """
Prometheus text format (OpenMetrics when the `Accept` header asks for it).

Without an `Authorization` header, metrics labelled by tenant and series are summed over them:
no tenant id, series name or per-series count is shown. With `Authorization: Bearer <token>` where
the token is the configured `DOCNUM_METRICS_TOKEN`, they are shown per tenant and series. Any
other `Authorization` gets 401.

With `DOCNUM_WORKERS` above 1, counters and histograms are those of every worker, added up at each
scrape; the pool gauges are those of the worker that answered.
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


def per_series(request: Request, token: str | None) -> bool:
    """Whether this scrape may see each tenant's series: it presents the metrics token."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return False
    scheme, _, credentials = authorization.partition(" ")
    if (
        token
        and scheme.lower() == "bearer"
        and hmac.compare_digest(credentials.strip().encode(), token.encode())
    ):
        return True
    raise Unauthorized(
        "Only the metrics token (DOCNUM_METRICS_TOKEN) is accepted here; "
        "scrape without Authorization for the metrics summed over tenants."
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics of the service",
    description=DESCRIPTION,
    response_class=Response,
    responses={
        200: {"description": "Metrics", "content": {"text/plain": {"example": EXAMPLE}}},
        **problem_responses(Unauthorized),
    },
)
async def get_metrics(request: Request, services: ServicesDep) -> Response:
    authorised = per_series(request, services.settings.metrics_token)
    body, content_type = render(
        services.pool, request.headers.get("accept", ""), per_series=authorised
    )
    return Response(body, media_type=content_type)
