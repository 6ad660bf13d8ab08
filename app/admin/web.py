"""How the portal answers: templates, security headers, error pages and redirects.

Every portal page goes out with a strict Content-Security-Policy (scripts and styles only from
the portal's own static files), is never cached, and cannot be framed. Templates escape all
values, so text an admin typed is shown as text, never run.
"""

import datetime
import json
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from app import __version__
from app.admin.session import AdminSession, SignInRequired
from app.http_errors import problem_for
from app.problems import InvalidRequest, Problem

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PORTAL_PATH = "/admin"
STATIC_PATH = "/admin/static"
SIGN_IN_PATH = "/admin/sign-in"
HOME_PATH = "/admin/series"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: datetime.datetime | None) -> str:
    if value is None:
        return "never"
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _value(value: object) -> str:
    """An audit detail as the API shows it: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value or "(empty)"
    return json.dumps(value)


def _pairs(variables: Mapping[str, str]) -> str:
    """A counter's variable values as an admin reads them: "branch=BR07, dept=SALES"."""
    return ", ".join(f"{name}={variables[name]}" for name in sorted(variables))


def _static(name: str) -> str:
    return f"{STATIC_PATH}/{name}?v={__version__}"


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["when"] = _when
templates.filters["value"] = _value
templates.filters["pairs"] = _pairs
templates.globals["static"] = _static


# What a page says after a form sent the browser to it; the subject is shown as text.
NOTICES = {
    "created": "The series was created.",
    "changed": "The series was saved.",
    "archived": "The series was archived: it issues no more numbers.",
    "voided": "{subject} was voided.",
    "counter-set": "The counter of {subject} was set.",
    "recorded": "{subject} was recorded.",
    "revoked": "Key {subject} was revoked.",
    "signed-out": "You are signed out.",
}


def render(
    request: Request,
    template: str,
    *,
    signed_in: AdminSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    html = templates.get_template(template).render(
        path=request.url.path,
        signed_in=signed_in,
        notice=notice.format(subject=request.query_params.get("subject", "")[:64]),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def redirect(path: str, **query: str | None) -> RedirectResponse:
    """A 303 to a portal page, so a reload after a form never sends the form again."""
    params = {k: v for k, v in query.items() if v}
    return RedirectResponse(f"{path}?{urlencode(params)}" if params else path, status_code=303)


def local_path(candidate: str | None) -> str:
    """Where to go after signing in: only a portal path, never another site."""
    if candidate and candidate.startswith("/admin/") and not candidate.startswith("/admin//"):
        return candidate
    return HOME_PATH


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PortalRoute(APIRoute):
    """Answers a portal route's errors with pages, and adds the security headers to everything."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def portal_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                query = f"?{request.url.query}" if request.url.query else ""
                next_path = request.url.path + query if request.method == "GET" else None
                response = redirect(SIGN_IN_PATH, next=next_path)
            except RequestValidationError:
                response = _error_page(request, InvalidRequest("This address is not valid."))
            except Exception as error:  # every failure, the database's included, is a page
                response = _error_page(request, problem_for(request, error))
            response.headers.update(SECURITY_HEADERS)
            return response

        return portal_handler


def error_page(request: Request, problem: Problem) -> HTMLResponse | None:
    """The error page for a problem found under the portal's path before any of its routes ran
    (an unknown method, a body the guards refused, a missing static file); None for the portal's
    JSON route (the preview) and for paths outside the portal, which answer problem+json."""
    path = request.url.path
    route = request.scope.get("route")
    json_route = isinstance(route, APIRoute) and not isinstance(route, PortalRoute)
    if json_route or not (path == PORTAL_PATH or path.startswith(f"{PORTAL_PATH}/")):
        return None
    return _error_page(request, problem)


def _error_page(request: Request, problem: Problem) -> HTMLResponse:
    page = render(
        request,
        "error.html",
        signed_in=None,
        status_code=problem.status,
        problem=problem,
    )
    page.headers.update({**problem.headers, **SECURITY_HEADERS})
    return page
