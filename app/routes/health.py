"""Liveness and readiness, for orchestrators and load balancers."""

from fastapi import APIRouter

from app.deps import ServicesDep
from app.http_errors import problem_responses
from app.migrate import load_migrations, pending
from app.problems import Unavailable

router = APIRouter(tags=["health"])

# A standby (in recovery) or a server with default_transaction_read_only cannot issue numbers.
ACCEPTS_WRITES = (
    "SELECT NOT pg_is_in_recovery() AND NOT current_setting('transaction_read_only')::boolean"
)


@router.get(
    "/healthz",
    summary="The process is up",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def get_health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database answers, accepts writes, and every migration is applied",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        **problem_responses(Unavailable),
    },
)
async def get_readiness(services: ServicesDep) -> dict[str, str]:
    try:
        async with services.pool.acquire(timeout=2) as conn:
            writable = await conn.fetchval(ACCEPTS_WRITES)
            missing = await pending(conn, load_migrations()) if writable else []
            if not writable:  # so the pool reconnects, to the writable host if the URL names it
                conn.terminate()
    except Exception as error:
        raise Unavailable(f"The database is not reachable: {type(error).__name__}.") from None
    if not writable:
        raise Unavailable("The database accepts no writes (read-only, or a standby).")
    if missing:
        raise Unavailable(f"{len(missing)} migrations are not applied yet.")
    return {"status": "ready"}
