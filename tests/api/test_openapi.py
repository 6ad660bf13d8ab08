"""The OpenAPI document tells the truth: the bearer scheme on every protected operation, and every
problem an operation can answer, as application/problem+json of one shared schema."""

from typing import Any

import httpx
import pytest

from app import schemas
from app.http_errors import PROBLEM_JSON
from app.schemas import ProblemDetail
from tests.api.test_auth import ROUTES

PUBLIC = {"/healthz", "/readyz", "/metrics", "/problems/{slug}"}
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


async def test_every_schema_of_the_document_is_a_model_of_the_schemas_module(
    document: dict[str, Any],
) -> None:
    for name in document["components"]["schemas"]:
        model = getattr(schemas, name, None)
        assert model is not None and model.__module__ == "app.schemas", name


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


async def test_protected_operations_document_429_with_its_rate_limit_headers(
    document: dict[str, Any],
) -> None:
    for method, path, operation in protected(document):
        limited = operation["responses"]["429"]
        assert "/problems/rate-limited" in limited["description"], (method, path)
        for header in ("Retry-After", "RateLimit-Policy", "RateLimit"):
            assert limited["headers"][header]["required"] is True, (method, path, header)


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


IDEMPOTENT = {
    "/series/{name}/next": "201",
    "/series/{name}/batch": "201",
    "/series/{name}/numbers/{number}/void": "200",
    "/series/{name}/numbers": "201",
    "/series": "201",
    "/keys": "201",
}


async def test_idempotent_operations_document_the_replay_header(
    document: dict[str, Any],
) -> None:
    for path, success in IDEMPOTENT.items():
        operation = document["paths"][path]["post"]
        names = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert "Idempotency-Key" in names, path
        assert "Idempotent-Replayed" in operation["responses"][success]["headers"], path
        assert "idempotency-key-reused" in operation["responses"]["422"]["description"], path


# Generated clients name their methods after these: changing one breaks their callers.
OPERATION_IDS = {
    ("GET", "/healthz"): "getHealth",
    ("GET", "/readyz"): "getReadiness",
    ("GET", "/metrics"): "getMetrics",
    ("GET", "/problems/{slug}"): "getProblemType",
    ("POST", "/series"): "createSeries",
    ("GET", "/series"): "listSeries",
    ("GET", "/series/{name}"): "getSeries",
    ("PATCH", "/series/{name}"): "updateSeries",
    ("DELETE", "/series/{name}"): "archiveSeries",
    ("POST", "/series/{name}/restore"): "restoreSeries",
    ("POST", "/series/{name}/next"): "nextNumber",
    ("POST", "/series/{name}/batch"): "issueBatch",
    ("GET", "/series/{name}/numbers"): "listNumbers",
    ("GET", "/series/{name}/numbers/{number}"): "getNumber",
    ("POST", "/series/{name}/numbers/{number}/void"): "voidNumber",
    ("PATCH", "/series/{name}/numbers/{number}"): "annotateNumber",
    ("POST", "/series/{name}/numbers"): "recordNumber",
    ("PUT", "/series/{name}/counters/{period}"): "setCounter",
    ("GET", "/series/{name}/next-preview"): "previewNext",
    ("GET", "/series/{name}/gaps"): "findGaps",
    ("POST", "/series/{name}/reservations"): "reserveNumbers",
    ("GET", "/series/{name}/reservations/{reservation_id}"): "getReservation",
    ("POST", "/series/{name}/reservations/{reservation_id}/confirm"): "confirmReservation",
    ("DELETE", "/series/{name}/reservations/{reservation_id}"): "releaseReservation",
    ("GET", "/series/{name}/verify"): "verifyChain",
    ("GET", "/series/{name}/export"): "exportPeriod",
    ("GET", "/keys"): "listKeys",
    ("POST", "/keys"): "createKey",
    ("DELETE", "/keys/{prefix}"): "revokeKey",
    ("GET", "/audit"): "listAuditEntries",
}


async def test_every_operation_has_its_stable_operation_id(document: dict[str, Any]) -> None:
    assert {(m, p): op["operationId"] for m, p, op in operations(document)} == OPERATION_IDS


async def test_every_tag_is_described(document: dict[str, Any]) -> None:
    described = {tag["name"]: tag.get("description") for tag in document["tags"]}
    used = {tag for _, _, operation in operations(document) for tag in operation["tags"]}
    assert used == set(described)
    assert all(described.values()), described


def success_headers(document: dict[str, Any], method: str, path: str) -> set[str]:
    operation = document["paths"][path][method.lower()]
    success = next(status for status in operation["responses"] if status.startswith("2"))
    return set(operation["responses"][success].get("headers", {}))


async def test_the_headers_of_successful_answers_are_documented(document: dict[str, Any]) -> None:
    for path in ("/series", "/keys", "/series/{name}/next", "/series/{name}/batch"):
        assert "Location" in success_headers(document, "POST", path), path
    for method, path in (
        ("POST", "/series"),
        ("GET", "/series/{name}"),
        ("PATCH", "/series/{name}"),
        ("POST", "/series/{name}/restore"),
    ):
        assert "ETag" in success_headers(document, method, path), (method, path)
    for path in ("/series", "/series/{name}/numbers", "/audit", "/keys"):
        assert "Link" in success_headers(document, "GET", path), path
    assert "Vary" in success_headers(document, "GET", "/series/{name}/numbers")


async def test_conditional_changes_document_if_match_and_its_problems(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/series/{name}"]["patch"]
    assert "If-Match" in {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert "precondition-failed" in operation["responses"]["412"]["description"]
    assert "precondition-required" in operation["responses"]["428"]["description"]
