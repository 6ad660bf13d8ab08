"""Liveness and readiness, for orchestrators and load balancers."""

from fastapi import APIRouter

from app.deps import ServicesDep
from app.errors import Unavailable, problem_responses
from app.migrate import load_migrations, pending

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="The process is up",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def get_health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database answers and every migration is applied",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        **problem_responses(Unavailable),
    },
)
async def get_readiness(services: ServicesDep) -> dict[str, str]:
    try:
        async with services.pool.acquire(timeout=2) as conn:
            missing = await pending(conn, load_migrations())
    except Exception as error:
        raise Unavailable(f"The database is not reachable: {type(error).__name__}.") from None
    if missing:
        raise Unavailable(f"{len(missing)} migrations are not applied yet.")
    return {"status": "ready"}
