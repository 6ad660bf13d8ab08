"""The OpenAPI document tells the truth: the bearer scheme on every protected operation, and every
problem an operation can answer, as application/problem+json of one shared schema."""

from typing import Any

import httpx
import pytest

from app.errors import PROBLEM_JSON, ProblemDetail
from tests.test_auth import ROUTES

PUBLIC = {"/healthz", "/readyz", "/metrics"}
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetail"}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def protected(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [op for op in operations(document) if op[1] not in PUBLIC]


def scheme_names(document: dict[str, Any]) -> set[str]:
    schemes = document["components"]["securitySchemes"]
    return {n for n, s in schemes.items() if s["type"] == "http" and s["scheme"] == "bearer"}


async def test_a_bearer_scheme_is_declared(document: dict[str, Any]) -> None:
    assert len(scheme_names(document)) == 1


async def test_every_protected_operation_requires_the_bearer_scheme(
    document: dict[str, Any],
) -> None:
    (name,) = scheme_names(document)
    assert protected(document)
    for method, path, operation in protected(document):
        assert operation.get("security") == [{name: []}], (method, path)
    for method, path, operation in operations(document):
        if path in PUBLIC:
            assert "security" not in operation, (method, path)


async def test_every_problem_is_documented_as_problem_json(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}, (
                    method,
                    path,
                    status,
                )


async def test_the_problem_schema_matches_what_is_sent(
    document: dict[str, Any], client: httpx.AsyncClient
) -> None:
    schema = document["components"]["schemas"]["ProblemDetail"]
    assert set(schema["required"]) == {"type", "title", "status", "detail"}
    sent = await client.post("/series", json={"name": "Bad"}, headers={"Authorization": "x"})
    assert set(sent.json()) <= set(schema["properties"])
    ProblemDetail.model_validate(sent.json())


async def test_protected_operations_document_401_with_its_challenge(
    document: dict[str, Any],
) -> None:
    for method, path, operation in protected(document):
        unauthorized = operation["responses"]["401"]
        assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True, (method, path)
        assert operation["responses"]["503"]["headers"]["Retry-After"]["required"] is True


async def test_exactly_the_admin_operations_document_403(document: dict[str, Any]) -> None:
    admin = {(r.method, r.path.replace("{series}", "{name}")) for r in ROUTES if r.scope == "admin"}
    documented = {(m, p) for m, p, op in protected(document) if "403" in op["responses"]}
    assert documented == admin


async def test_operations_document_the_problems_of_their_inputs(
    document: dict[str, Any],
) -> None:
    for method, path, operation in protected(document):
        statuses = set(operation["responses"])
        assert "422" in statuses, (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= statuses, (method, path)
        if "{name}" in path or "{prefix}" in path:
            assert "404" in statuses, (method, path)


async def test_idempotent_operations_document_the_replay_header(
    document: dict[str, Any],
) -> None:
    for path in ("/series/{name}/next", "/series/{name}/batch"):
        operation = document["paths"][path]["post"]
        names = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert "Idempotency-Key" in names
        assert "Idempotent-Replayed" in operation["responses"]["201"]["headers"]
        assert "idempotency-key-reused" in operation["responses"]["422"]["description"]
