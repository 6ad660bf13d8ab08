"""Every problem ``type`` URI resolves to a page that says what the problem means and what to do,
generated from the problem classes: HTML for people, JSON for programs."""

import html

import httpx
import pytest

from app.problems import Problem, problem_types
from harness.tenants import Tenant
from tests.support.api import assert_problem

KINDS = problem_types()


def test_every_problem_class_has_its_own_slug_and_description() -> None:
    slugs = [kind.slug for kind in KINDS]
    assert len(slugs) == len(set(slugs))
    for kind in KINDS:
        assert "description" in vars(kind), f"{kind.__name__} needs a description of its own"
        assert kind.description.strip(), kind.__name__


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.slug)
async def test_each_problem_type_has_a_readable_page(
    client: httpx.AsyncClient, kind: type[Problem]
) -> None:
    page = await client.get(f"/problems/{kind.slug}")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert html.escape(kind.title) in page.text
    assert f"<strong>{kind.status}</strong>" in page.text
    assert "Accept" in page.headers["vary"]
    described = await client.get(f"/problems/{kind.slug}", headers={"Accept": "application/json"})
    assert described.json() == {
        "type": f"/problems/{kind.slug}",
        "title": kind.title,
        "status": kind.status,
        "description": kind.description,
    }


async def test_the_type_of_an_error_answered_by_the_api_resolves(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    error = assert_problem(
        await client.get("/series/missing", headers=tenant.issuer), 404, "series-not-found"
    )
    page = await client.get(error["type"], headers={"Accept": "application/json"})
    assert page.json()["title"] == error["title"]


async def test_an_unknown_problem_type_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/problems/no-such-problem"), 404, "not-found")
