"""A readable page per problem type, so that every ``type`` URI an error carries resolves.

The pages are generated from the problem classes in ``app.problems`` (slug, title, status and
description), so a new problem type has its page as soon as it exists. HTML by default, JSON when
the ``Accept`` header prefers it. Public, like the API description.
"""

import html
import re
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from app.http_errors import problem_responses
from app.negotiation import negotiate
from app.problems import InvalidRequest, NotFound, Problem, problem_types
from app.schemas import ProblemType

router = APIRouter(prefix="/problems", tags=["problems"])

HTML = "text/html"
JSON = "application/json"
# The pages load nothing: no script, no style sheet, no image.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} ({status}) · Docnum</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;\
line-height:1.5}}code{{background:#eee;padding:0 .2em}}</style></head>
<body><h1>{title}</h1>
<p>HTTP status <strong>{status}</strong>, problem type <code>{type}</code></p>
<p>{description}</p>
<p>Every error of the API is <code>application/problem+json</code> (RFC 9457); switch on its
<code>type</code>, and show its <code>detail</code> to people.
The API is described at <a href="/docs">/docs</a>.</p>
</body></html>
"""


def _by_slug() -> dict[str, type[Problem]]:
    return {kind.slug: kind for kind in problem_types()}


def _code(text: str) -> str:
    """Escaped text with its `backquoted` parts as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


@router.get(
    "/{slug}",
    summary="What a problem type means and what to do about it",
    response_model=ProblemType,
    responses={
        200: {
            "content": {HTML: {"schema": {"type": "string"}, "example": "<!doctype html>…</html>"}}
        },
        **problem_responses(NotFound, InvalidRequest),
    },
)
async def get_problem_type(
    slug: Annotated[str, Path(pattern=r"^[a-z0-9-]{1,64}$", examples=["series-not-found"])],
    request: Request,
) -> ProblemType | Response:
    kind = _by_slug().get(slug)
    if kind is None:
        raise NotFound(f"No problem type {slug!r}.")
    found = ProblemType(
        type=f"/problems/{kind.slug}",
        title=kind.title,
        status=kind.status,
        description=kind.description,
    )
    headers = {"Vary": "Accept"}
    if negotiate(request.headers.get("accept"), (HTML, JSON)) == JSON:
        return Response(found.model_dump_json(), media_type=JSON, headers=headers)
    page = PAGE.format(
        title=html.escape(found.title),
        status=found.status,
        type=html.escape(found.type),
        description=_code(found.description),
    )
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return Response(page, media_type=HTML, headers=headers)
