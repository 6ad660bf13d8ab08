"""Signing in to the portal with an admin key, and signing out."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.admin.session import (
    CSRF_FIELD,
    CheckedFormDep,
    Session,
    Sessions,
    SessionsDep,
    SignInRequired,
    get_admin_session,
)
from app.admin.web import HOME_PATH, SIGN_IN_PATH, PortalRoute, local_path, redirect, render
from app.deps import ServicesDep
from app.problems import NotFound, Unauthorized

router = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)
# Included after every other portal route: what none of them matched is a portal page not found.
fallback = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)

NextPath = Annotated[str | None, Query(max_length=500)]

SIGN_IN_ERRORS = {
    401: "This key is unknown or revoked. Check that it was pasted whole.",
    403: "This key may only issue numbers. Sign in with a key that has the admin scope.",
}


@router.get("")
async def home() -> Response:
    return redirect(HOME_PATH)


@router.get("/sign-in")
async def sign_in_page(
    request: Request,
    sessions: SessionsDep,
    services: ServicesDep,
    next: NextPath = None,
) -> Response:
    try:
        await get_admin_session(request, sessions, services)
    except SignInRequired:
        pass
    else:
        return redirect(local_path(next))
    session = sessions.read(request)
    if session is None or session.key is not None:
        session = sessions.new(key=None)
    response = _sign_in_form(request, sessions, session, next)
    sessions.save(response, session)
    return response


@router.post("/sign-in")
async def sign_in(request: Request, sessions: SessionsDep, services: ServicesDep) -> Response:
    form = await request.form()
    session = sessions.check_csrf(sessions.read(request), form.get(CSRF_FIELD))
    next_path, key = str(form.get("next", "")), str(form.get("key", "")).strip()
    try:
        principal = await services.auth.verify(key)
    except Unauthorized:
        return _sign_in_form(request, sessions, session, next_path, status=401)
    if principal.scope != "admin":
        return _sign_in_form(request, sessions, session, next_path, status=403)
    response = redirect(local_path(next_path))
    sessions.save(response, sessions.new(key=principal.prefix))
    return response


@router.post("/sign-out")
async def sign_out(sessions: SessionsDep, _form: CheckedFormDep) -> Response:
    response = redirect(SIGN_IN_PATH, notice="signed-out")
    sessions.end(response)
    return response


def _sign_in_form(
    request: Request,
    sessions: Sessions,
    session: Session,
    next_path: str | None,
    *,
    status: int = 200,
) -> Response:
    return render(
        request,
        "sign_in.html",
        signed_in=None,
        status_code=status,
        csrf=sessions.csrf(session),
        next=local_path(next_path),
        error=SIGN_IN_ERRORS.get(status, ""),
    )


@fallback.api_route("/{path:path}", methods=["GET", "POST"])
async def no_such_page(path: str) -> Response:
    if not path:
        return redirect(HOME_PATH)
    raise NotFound("There is no such page in the portal.")
