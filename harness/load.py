"""Retrying load over real HTTP, and the guarantees to check after it."""

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.tenants import Tenant, create_series

RETRY_PAUSE_SECONDS = 0.05
# Transport errors raised before the request left the client: the server never saw it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Target:
    """A series to issue from, and the tenant that owns it."""

    tenant: Tenant
    series: str


async def series_per_mode(
    client: httpx.AsyncClient, tenant: Tenant, *, block_size: int
) -> list[Target]:
    """One series per mode, each with a ledger, so every value can be accounted for."""
    await create_series(client, tenant, "gapless", mode="gapless")
    await create_series(client, tenant, "sequence", mode="sequence", ledger=True)
    await create_series(client, tenant, "cached", mode="cached", ledger=True, block_size=block_size)
    return [Target(tenant, name) for name in ("gapless", "sequence", "cached")]


@dataclass
class Answered:
    """What one Idempotency-Key finally got, and what it took."""

    target: Target
    key: str
    path: str
    body: dict[str, Any]
    client: int
    url: str  # the process that answered
    order: int
    period: str
    values: list[int]
    attempts: int
    lost: int  # attempts that reached the server but whose answer never came back
    replayed: bool


@dataclass
class Load:
    """Clients issuing numbers over real HTTP, every request with an Idempotency-Key of its own.

    Each client sends one request at a time, so its answers are in time order. A request that
    gets no answer (refused, dropped, timed out), a 503 problem or an in-flight 409 is sent again
    with the same key and body to the next process, as a careful client would, until it is
    answered or ``patience`` runs out (then its key is in ``given_up``). Any other answer, and a
    503 that is not a problem with ``Retry-After``, is kept in ``unexpected``.
    """

    urls: list[str]  # a test may swap in the address of a restarted process while this runs
    targets: list[Target]
    clients: int = 16
    batch_every: int = 4
    timeout: float = 5.0
    patience: float = 30.0
    answered: dict[str, Answered] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    # Why attempts were retried: an exception name or "<status> <problem type>".
    retried: Counter[str] = field(default_factory=Counter)
    _prefix: str = field(default_factory=lambda: secrets.token_hex(3))

    async def run(self, stop: asyncio.Event) -> None:
        """Issue until ``stop`` is set; each client finishes the key it is on."""
        limits = httpx.Limits(max_connections=self.clients * 2)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as http:
            await asyncio.gather(*(self._client(http, i, stop) for i in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, client: int, stop: asyncio.Event) -> None:
        sent = 0
        while not stop.is_set():
            target = self.targets[(client + sent) % len(self.targets)]
            batch = sent % self.batch_every == self.batch_every - 1
            path, body = ("batch", {"count": 3}) if batch else ("next", {})
            await self.issue(http, client, target, f"{self._prefix}-{client}-{sent}", path, body)
            sent += 1

    async def issue(
        self,
        http: httpx.AsyncClient,
        client: int,
        target: Target,
        key: str,
        path: str,
        body: dict[str, Any],
    ) -> Answered | None:
        started = time.monotonic()
        attempts = lost = 0
        headers = {**target.tenant.issuer, "Idempotency-Key": key}
        while time.monotonic() - started < self.patience:
            url = self.urls[(client + attempts) % len(self.urls)]
            attempts += 1
            try:
                response = await http.post(
                    f"{url}/series/{target.series}/{path}", json=body, headers=headers
                )
            except httpx.TransportError as error:
                self.retried[type(error).__name__] += 1
                lost += not isinstance(error, NOT_SENT)
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            if response.status_code == 201:
                payload = response.json()
                answer = Answered(
                    target=target,
                    key=key,
                    path=path,
                    body=body,
                    client=client,
                    url=url,
                    order=len(self.answered),
                    period=payload["period"],
                    values=payload["values"] if path == "batch" else [payload["value"]],
                    attempts=attempts,
                    lost=lost,
                    replayed=response.headers.get("Idempotent-Replayed") == "true",
                )
                self.answered[key] = answer
                return answer
            if not _is_retryable(response):
                self.unexpected.append(f"{url} {path} {response.status_code}: {response.text}")
                return None
            self.retried[f"{response.status_code} {response.json()['type']}"] += 1
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
        self.given_up.append(key)
        return None

    async def replay_violations(self, http: httpx.AsyncClient, keys: list[str]) -> list[str]:
        """Ask again for each key, at another process: the same numbers must come back."""

        async def again(index: int, key: str) -> str | None:
            first = self.answered[key]
            url = self.urls[(first.client + index + 1) % len(self.urls)]
            response = await http.post(
                f"{url}/series/{first.target.series}/{first.path}",
                json=first.body,
                headers={**first.target.tenant.issuer, "Idempotency-Key": key},
            )
            payload = response.json() if response.status_code == 201 else {}
            values = payload.get("values", [payload.get("value")])
            if response.headers.get("Idempotent-Replayed") == "true" and values == first.values:
                return None
            return f"{key}: first {first.values}, again {response.status_code} {values}"

        found = await asyncio.gather(*(again(i, key) for i, key in enumerate(keys)))
        return [problem for problem in found if problem is not None]


def _is_retryable(response: httpx.Response) -> bool:
    if response.headers.get("content-type") != "application/problem+json":
        return False
    kind = response.json().get("type")
    if response.status_code == 503:
        return "Retry-After" in response.headers
    return response.status_code == 409 and kind == "/problems/idempotency-key-in-flight"


async def eventually(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Wait until ``check()`` holds, polling; fail the test if it does not within ``within`` s."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)


async def load_resumes(load: Load, urls: list[str], answers: int, within: float) -> None:
    """After a fault: every process answers again within ``within`` s, then ``answers`` more."""
    since = len(load.answered)
    await eventually(
        lambda: {a.url for a in load.answered.values() if a.order >= since} == set(urls),
        "every process issues again",
        within=within,
    )
    await eventually(lambda: len(load.answered) >= since + answers, "load goes on")


async def ledger_entries(
    http: httpx.AsyncClient,
    series: str,
    *,
    url: str = "",
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every entry of the series' ledger, read page by page as an operator would (from ``url``,
    default: ``http``'s base URL; with ``headers``, default: ``http``'s)."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        response = await http.get(f"{url}/series/{series}/numbers", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        entries.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return entries


async def ledger_values(http: httpx.AsyncClient, url: str, target: Target) -> list[tuple[str, int]]:
    """Every (period, value) in the series' ledger."""
    entries = await ledger_entries(http, target.series, url=url, headers=target.tenant.admin)
    return [(entry["period"], entry["value"]) for entry in entries]


async def guarantee_violations(
    http: httpx.AsyncClient, url: str, target: Target, answered: list[Answered]
) -> list[str]:
    """What the answers and the ledger of one series show against its mode's guarantees.

    All modes: no value reaches two keys. gapless and sequence: each client's answers increase
    (a value is issued after every value its client already received). With a ledger: every
    value a client received is recorded and, since every key was retried until answered, every
    recorded value reached a client; ``/gaps`` reports exactly the values up to the counter's top
    that the ledger lacks. gapless: there are none.
    """
    response = await http.get(f"{url}/series/{target.series}", headers=target.tenant.admin)
    assert response.status_code == 200, response.text
    series = response.json()
    name, mode, step = target.series, series["mode"], series["step"]
    found: list[str] = []
    received = [(a.period, v) for a in answered for v in a.values]
    twice = sorted(v for v, times in Counter(received).items() if times > 1)
    if twice:
        found.append(f"{name}: values issued to two keys: {twice[:20]}")
    if mode != "cached":
        highest: dict[tuple[int, str], int] = {}
        for answer in sorted(answered, key=lambda a: a.order):
            seen = highest.get((answer.client, answer.period))
            if seen is not None and min(answer.values) <= seen:
                found.append(f"{name}: client {answer.client} got {answer.values} after {seen}")
            highest[(answer.client, answer.period)] = max(answer.values)
    if not series["ledger"]:
        return found
    recorded = set(await ledger_values(http, url, target))
    if set(received) - recorded:
        found.append(f"{name}: received, not recorded: {sorted(set(received) - recorded)[:20]}")
    if recorded - set(received):
        found.append(f"{name}: recorded, never received: {sorted(recorded - set(received))[:20]}")
    for period in sorted({a.period for a in answered}):
        response = await http.get(
            f"{url}/series/{name}/gaps", params={"period": period}, headers=target.tenant.admin
        )
        assert response.status_code == 200, response.text
        report = response.json()
        top = series["start"] - step if report["last_value"] is None else report["last_value"]
        kept = {v for p, v in recorded if p == period}
        lacking = set(range(series["start"], top + 1, step)) - kept
        reported = {v for gap in report["gaps"] for v in range(gap["first"], gap["last"] + 1, step)}
        if reported != lacking or report["missing"] != len(lacking):
            found.append(f"{name} {period}: /gaps says {report['gaps']}, lacking {sorted(lacking)}")
        if mode == "gapless" and lacking:
            found.append(f"{name} {period}: gapless series has holes: {sorted(lacking)[:20]}")
    return found
