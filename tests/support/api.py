"""What the tests expect of the API's answers."""

from typing import Any

import httpx

# The metrics token of the tests' app: a scrape that presents it sees each tenant's series.
METRICS_TOKEN = "dXNlZC1vbmx5LWJ5LXRoZS10ZXN0cy1vZi1kb2NudW0"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and type, with nothing internal in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"], body
    assert "Traceback" not in response.text
    return body
