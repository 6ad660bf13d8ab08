"""The Python client against a real ``docnum serve``: results, typed errors, and safe retries.

Lost answers are made by a loopback proxy that lets the service answer, then drops the answer
and closes the client's connection: the one failure where a naive retry would spend a second
number.
"""

import asyncio
import dataclasses
import datetime
import logging
import pickle
import socket
import socketserver
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from docnum_client import (
    AlreadyVoided,
    AsyncDocnumClient,
    Conflict,
    DateOrder,
    DocnumClient,
    DocnumError,
    Forbidden,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    IssuedBatch,
    IssuedNumber,
    LedgerDisabled,
    LedgerEntry,
    NotFound,
    NotGapless,
    NumberNotFound,
    PeriodClosed,
    PreconditionFailed,
    ReservationConfirmed,
    ReservationNotFound,
    ReservationReleased,
    SeriesArchived,
    SeriesExhausted,
    SeriesNotFound,
    ServiceUnreachable,
    Unauthorized,
    Unavailable,
)
from docnum_client._core import RetryPolicy
from docnum_client.errors import from_response, parse_retry_after

from harness.processes import ServiceProcess, free_port, start_service
from harness.tenants import Tenant

DAY = datetime.date(2026, 5, 1)
# Short, so a test that holds a counter lock gets its 503s quickly.
LOCK_TIMEOUT_MS = 200
WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def service(database_url: str, service_dir: Path) -> Iterator[ServiceProcess]:
    started = start_service(
        database_url,
        service_dir,
        env={"DOCNUM_LOCK_TIMEOUT_MS": str(LOCK_TIMEOUT_MS)},
    )
    try:
        yield started
    finally:
        started.stop()


async def make_series(service: ServiceProcess, tenant: Tenant, name: str, **fields: object) -> str:
    body = {"name": name, "format": "T-{seq}", **fields}
    async with httpx.AsyncClient(base_url=service.url, headers=tenant.admin) as http:
        response = await http.post("/series", json=body)
    assert response.status_code == 201, response.text
    return name


async def archive(service: ServiceProcess, tenant: Tenant, name: str) -> None:
    async with httpx.AsyncClient(base_url=service.url, headers=tenant.admin) as http:
        response = await http.delete(f"/series/{name}")
    assert response.status_code == 204, response.text


async def ledger(service: ServiceProcess, tenant: Tenant, name: str) -> list[int]:
    async with httpx.AsyncClient(base_url=service.url, headers=tenant.admin) as http:
        response = await http.get(f"/series/{name}/numbers")
    assert response.status_code == 200, response.text
    return [item["value"] for item in response.json()["items"]]


# --- a proxy that loses answers


@dataclass(frozen=True)
class Exchange:
    idempotency_key: str | None
    status: int
    replayed: bool
    dropped: bool


class LossyProxy(socketserver.ThreadingTCPServer):
    """Forwards one request per connection to the service; drops the first ``drop`` answers.

    A dropped answer was fully produced by the service (its number is committed) and then never
    delivered: the client sees the connection close without a response.
    """

    daemon_threads = True

    def __init__(self, upstream_port: int, drop: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port = upstream_port
        self.drop = drop
        self.exchanges: list[Exchange] = []
        self.changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, request_head: bytes, answer: bytes) -> bool:
        """Note the exchange; return whether to drop the answer."""
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        with self.changed:
            dropped = self.drop > 0
            self.drop -= dropped
            self.exchanges.append(
                Exchange(
                    idempotency_key=_header(request_head, b"idempotency-key"),
                    status=int(head.split(b" ", 2)[1]),
                    replayed=b"\r\nidempotent-replayed: true" in head,
                    dropped=dropped,
                )
            )
            self.changed.notify_all()
        return dropped

    def wait_for(self, condition: Callable[[list[Exchange]], bool]) -> bool:
        """Block until the exchanges so far satisfy ``condition`` (False after a while)."""
        with self.changed:
            return self.changed.wait_for(lambda: condition(self.exchanges), WAIT_SECONDS)


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode()
    return None


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: LossyProxy

    def handle(self) -> None:
        lines = []
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            if not line.lower().startswith(b"connection:"):
                lines.append(line)
        head = b"".join(lines) + b"Connection: close\r\n"
        length = int(_header(head, b"content-length") or 0)
        body = self.rfile.read(length)
        with socket.create_connection(("127.0.0.1", self.server.upstream_port), timeout=10) as up:
            up.sendall(head + b"\r\n" + body)
            answer = b"".join(iter(lambda: up.recv(65536), b""))
        if not self.server.record(head, answer):
            self.wfile.write(answer)


@pytest.fixture
def proxy(service: ServiceProcess) -> Iterator[LossyProxy]:
    server = LossyProxy(service.port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# --- issuing


async def test_next_and_batch_return_typed_results(service: ServiceProcess, tenant: Tenant) -> None:
    template = "{var:shop}-{YYYY}-{seq:04}"
    name = await make_series(service, tenant, "inv", format=template, reset="yearly")
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        one = docnum.next(name, date=DAY, variables={"shop": "B7"})
        many = docnum.batch(name, 3, date=DAY, variables={"shop": "B7"})
    assert one == IssuedNumber(
        series=name,
        number="B7-2026-0001",
        value=1,
        period="2026",
        date=DAY,
        issued_at=one.issued_at,
    )
    assert one.issued_at.tzinfo is not None
    assert many == IssuedBatch(
        series=name,
        period="2026",
        date=DAY,
        issued_at=many.issued_at,
        count=3,
        numbers=("B7-2026-0002", "B7-2026-0003", "B7-2026-0004"),
        values=(2, 3, 4),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.value = 9  # type: ignore[misc]


async def test_async_client_issues_unique_consecutive_numbers(
    service: ServiceProcess, tenant: Tenant
) -> None:
    name = await make_series(service, tenant, "a")
    async with AsyncDocnumClient(service.url, tenant.issue_key) as docnum:
        singles = await asyncio.gather(*(docnum.next(name) for _ in range(20)))
        batch = await docnum.batch(name, 5)
    values = sorted(n.value for n in singles)
    assert values == list(range(1, 21))
    assert batch.values == (21, 22, 23, 24, 25)
    assert sorted(await ledger(service, tenant, name)) == list(range(1, 26))


async def test_own_idempotency_key_returns_the_same_number(
    service: ServiceProcess, tenant: Tenant
) -> None:
    name = await make_series(service, tenant, "own")
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        first = docnum.next(name, date=DAY, idempotency_key="invoice-42")
        again = docnum.next(name, date=DAY, idempotency_key="invoice-42")
        batch = docnum.batch(name, 2, date=DAY, idempotency_key="run-7")
        batch_again = docnum.batch(name, 2, date=DAY, idempotency_key="run-7")
    assert again == first
    assert batch_again == batch
    assert sorted(await ledger(service, tenant, name)) == [1, 2, 3]


# --- looking up and voiding


async def test_a_percent_encoded_slash_reaches_the_void_route_of_a_real_server(
    service: ServiceProcess, tenant: Tenant
) -> None:
    """httpx sends %2F as it is; uvicorn decodes it in the path the routes match on."""
    await make_series(service, tenant, "sl", format="INV/{YYYY}/{seq:04}")
    async with httpx.AsyncClient(base_url=service.url) as http:
        issued = await http.post(
            "/series/sl/next", json={"date": "2026-05-01"}, headers=tenant.issuer
        )
        assert issued.json()["number"] == "INV/2026/0001"
        voided = await http.post(
            "/series/sl/numbers/INV%2F2026%2F0001/void",
            json={"reason": "cancelled"},
            headers=tenant.admin,
        )
        found = await http.get("/series/sl/numbers/INV/2026/0001", headers=tenant.issuer)
    assert voided.request.url.raw_path == b"/series/sl/numbers/INV%2F2026%2F0001/void"
    assert voided.status_code == 200, voided.text
    assert (voided.json()["number"], voided.json()["void_reason"]) == ("INV/2026/0001", "cancelled")
    assert found.json() == voided.json()


@pytest.mark.parametrize("template", ["INV/{YYYY}/{seq:04}", "Q? #%é/{seq}/void"])
async def test_numbers_are_looked_up_and_voided_whatever_their_characters(
    service: ServiceProcess, tenant: Tenant, template: str
) -> None:
    name = await make_series(service, tenant, "odd", format=template)
    with DocnumClient(service.url, tenant.admin_key) as docnum:
        first, second = docnum.batch(name, 2, date=DAY).numbers
        found = docnum.get_number(name, first)
        voided = docnum.void(name, second, "cancelled")
        with pytest.raises(AlreadyVoided):
            docnum.void(name, second, "twice")
        with pytest.raises(NumberNotFound) as missing:
            docnum.get_number(name, first + "x")
    assert found == LedgerEntry(
        number=first,
        value=1,
        period="all",
        date=DAY,
        issued_at=found.issued_at,
        status="issued",
        void_reason=None,
        voided_at=None,
    )
    assert found.issued_at.tzinfo is not None
    assert (voided.number, voided.status, voided.void_reason) == (second, "voided", "cancelled")
    assert voided.voided_at is not None and voided.voided_at >= voided.issued_at
    assert isinstance(missing.value, NotFound)
    async with AsyncDocnumClient(service.url, tenant.issue_key) as docnum:
        assert await docnum.get_number(name, second) == voided
        with pytest.raises(Forbidden):
            await docnum.void(name, first, "an issue key may not void")


async def test_async_void_and_the_ledger_problems(service: ServiceProcess, tenant: Tenant) -> None:
    gapless = await make_series(service, tenant, "g", format="G/{seq}")
    unrecorded = await make_series(service, tenant, "s", mode="sequence", format="S/{seq}")
    recorded = await make_series(service, tenant, "r", mode="sequence", ledger=True)
    async with AsyncDocnumClient(service.url, tenant.admin_key) as docnum:
        number = (await docnum.next(gapless)).number
        assert (await docnum.void(gapless, number, "typo")).status == "voided"
        await docnum.next(unrecorded)
        with pytest.raises(LedgerDisabled):
            await docnum.get_number(unrecorded, "S/1")
        recorded_number = (await docnum.next(recorded)).number
        with pytest.raises(NotGapless):
            await docnum.void(recorded, recorded_number, "typo")
        assert (await docnum.get_number(recorded, recorded_number)).status == "issued"


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_void_whose_answer_was_lost_gets_the_first_answer_back(
    service: ServiceProcess, tenant: Tenant, proxy: LossyProxy, flavour: str
) -> None:
    name = await make_series(service, tenant, "lostvoid")
    with DocnumClient(service.url, tenant.admin_key) as docnum:
        number = docnum.next(name).number
    proxy.drop = 1
    if flavour == "sync":
        with DocnumClient(proxy.url, tenant.admin_key) as docnum:
            voided = docnum.void(name, number, "cancelled")
    else:
        async with AsyncDocnumClient(proxy.url, tenant.admin_key) as adocnum:
            voided = await adocnum.void(name, number, "cancelled")
    first, retry = proxy.exchanges
    assert (first.status, first.dropped, retry.status, retry.replayed) == (200, True, 200, True)
    assert retry.idempotency_key == first.idempotency_key is not None
    assert (voided.status, voided.void_reason, voided.replayed) == ("voided", "cancelled", True)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_reserve_confirm_and_release_keep_a_gapless_series_whole(
    service: ServiceProcess, tenant: Tenant, flavour: str
) -> None:
    name = await make_series(service, tenant, f"held-{flavour}")
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        if flavour == "sync":
            kept = docnum.reserve(name, DAY, document_ref="SO-1", ttl_seconds=60)
            let_go = docnum.reserve(name, DAY, count=2)
            released = docnum.release(name, let_go.id)
            confirmed = docnum.confirm(name, kept.id, document_ref="INV-1")
            again = docnum.confirm(name, kept.id)
            with pytest.raises(ReservationReleased) as ended:
                docnum.confirm(name, let_go.id)
            with pytest.raises(ReservationConfirmed):
                docnum.release(name, kept.id)
            with pytest.raises(ReservationNotFound):
                docnum.get_reservation(name, str(uuid.uuid4()))
        else:
            async with AsyncDocnumClient(service.url, tenant.issue_key) as adocnum:
                kept = await adocnum.reserve(name, DAY, document_ref="SO-1", ttl_seconds=60)
                let_go = await adocnum.reserve(name, DAY, count=2)
                released = await adocnum.release(name, let_go.id)
                confirmed = await adocnum.confirm(name, kept.id, document_ref="INV-1")
                again = await adocnum.confirm(name, kept.id)
                with pytest.raises(ReservationReleased) as ended:
                    await adocnum.confirm(name, let_go.id)
                with pytest.raises(ReservationConfirmed):
                    await adocnum.release(name, kept.id)
                with pytest.raises(ReservationNotFound):
                    await adocnum.get_reservation(name, str(uuid.uuid4()))
        assert isinstance(ended.value, Conflict)
        assert (kept.status, kept.number, kept.values, kept.document_ref) == (
            "reserved",
            "T-1",
            (1,),
            "SO-1",
        )
        assert kept.expires_at > kept.reserved_at
        assert (released.status, released.values) == ("released", (2, 3))
        assert (confirmed.status, confirmed.document_ref) == ("confirmed", "INV-1")
        assert again == confirmed
        assert docnum.next(name, DAY).value == 2  # the released values are handed out again
        assert docnum.get_number(name, "T-1").status == "issued"


# --- the whole API


async def test_series_are_created_listed_page_by_page_changed_archived_and_restored(
    service: ServiceProcess, tenant: Tenant
) -> None:
    with DocnumClient(service.url, tenant.admin_key) as docnum:
        created = docnum.create_series(
            "a-inv", "A-{YYYY}-{seq}", reset="yearly", idempotency_key="make-a"
        )
        again = docnum.create_series(
            "a-inv", "A-{YYYY}-{seq}", reset="yearly", idempotency_key="make-a"
        )
        docnum.create_series("b-inv", "B-{seq}")
        docnum.create_series("c-inv", "C-{seq}")
        listed = list(docnum.list_series(page_size=2))
        read = docnum.get_series("a-inv")
        changed = docnum.update_series(
            "a-inv", if_match=read.etag, format="A-{YYYY}-{seq:04}", effective_from=DAY
        )
        with pytest.raises(PreconditionFailed) as stale:
            docnum.update_series("a-inv", if_match=read.etag, description="south")
        docnum.archive_series("b-inv")
        active = [s.name for s in docnum.list_series(page_size=1)]
        everything = [s.name for s in docnum.list_series(archived=True, page_size=1)]
        restored = docnum.restore_series("b-inv")
    assert (created.name, created.reset, created.replayed, again.replayed) == (
        "a-inv",
        "yearly",
        False,
        True,
    )
    assert again == created
    assert [s.name for s in listed] == ["a-inv", "b-inv", "c-inv"]
    assert read.etag is not None and read.counters == ()
    assert [(f.format, f.effective_from) for f in changed.formats] == [
        ("A-{YYYY}-{seq}", None),
        ("A-{YYYY}-{seq:04}", DAY),
    ]
    assert changed.etag not in (None, read.etag)
    assert stale.value.status == 412
    assert active == ["a-inv", "c-inv"]
    assert everything == ["a-inv", "b-inv", "c-inv"]
    assert (restored.name, restored.archived) == ("b-inv", False)


async def test_the_ledger_is_read_page_by_page_filtered_checked_for_gaps_and_downloaded(
    service: ServiceProcess, tenant: Tenant, tmp_path: Path
) -> None:
    name = await make_series(service, tenant, "book", format="BK-{seq:03}")
    async with AsyncDocnumClient(service.url, tenant.admin_key) as docnum:
        numbers = (await docnum.batch(name, 5, date=DAY)).numbers
        await docnum.void(name, numbers[1], "typo")
        entries = [e async for e in docnum.ledger(name, page_size=2)]
        voided = [e.number async for e in docnum.ledger(name, status="voided")]
        elsewhere = [e async for e in docnum.ledger(name, period="2025")]
        gaps = await docnum.gaps(name, period="all")
        csv = await docnum.ledger_csv(name, status="voided")
        download = await docnum.download_ledger(name, tmp_path / "book.csv")
    assert sorted(e.number for e in entries) == list(numbers)
    assert len({e.request_id for e in entries}) == 3  # three pages
    assert voided == [numbers[1]]
    assert elsewhere == []
    assert (gaps.period, gaps.last_value, gaps.missing, gaps.gaps) == ("all", 5, 0, ())
    rows = csv.decode().splitlines()
    assert rows[0].startswith("period,variables,value,number")
    assert [row.split(",")[3] for row in rows[1:]] == [numbers[1]]
    written = (tmp_path / "book.csv").read_bytes()
    assert download.size == len(written) and download.request_id
    assert sorted(line.split(",")[3] for line in written.decode().splitlines()[1:]) == list(numbers)


async def test_keys_are_created_once_per_idempotency_key_listed_revoked_and_audited(
    service: ServiceProcess, tenant: Tenant
) -> None:
    with DocnumClient(service.url, tenant.admin_key) as docnum:
        made = docnum.create_key("issue", "erp", idempotency_key="erp-key")
        again = docnum.create_key("issue", "erp", idempotency_key="erp-key")
        listed = [k.prefix for k in docnum.list_keys(page_size=1)]
        revoked = docnum.revoke_key(made.details.prefix)
        still_listed = [k.prefix for k in docnum.list_keys()]
        with_revoked = [k.prefix for k in docnum.list_keys(revoked=True, page_size=2)]
        actions = [e.action for e in docnum.audit(page_size=1)]
        revocations = list(docnum.audit(action="key.revoked"))
    assert (again.key, again.replayed) == (made.key, True)
    assert made.details.scope == "issue" and made.details.name == "erp"
    assert len(listed) == 3 and made.details.prefix in listed
    assert revoked.revoked_at is not None
    assert made.details.prefix not in still_listed
    assert set(with_revoked) == set(listed)
    # The tenant's own two keys were audited when it was made.
    assert actions == ["key.revoked", "key.created", "key.created", "key.created"]
    assert [e.details for e in revocations] == [revocations[0].details]
    with DocnumClient(service.url, made.key) as revoked_client, pytest.raises(Unauthorized):
        revoked_client.next("any")


async def test_results_and_errors_carry_the_request_id_and_the_replay_flag(
    service: ServiceProcess, tenant: Tenant
) -> None:
    name = await make_series(service, tenant, "ids")
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        first = docnum.next(name, idempotency_key="doc-1")
        replay = docnum.next(name, idempotency_key="doc-1")
        with pytest.raises(SeriesNotFound) as missing:
            docnum.next("missing")
    assert (first.replayed, replay.replayed) == (False, True)
    assert first.request_id and replay.request_id and first.request_id != replay.request_id
    assert missing.value.request_id and missing.value.request_id != first.request_id
    assert missing.value.replayed is False


async def test_the_client_reads_its_url_and_key_from_the_environment(
    service: ServiceProcess, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await make_series(service, tenant, "env")
    monkeypatch.setenv("DOCNUM_URL", service.url)
    monkeypatch.setenv("DOCNUM_API_KEY", tenant.issue_key)
    with DocnumClient() as docnum:
        assert docnum.next(name).number == "T-1"
    async with AsyncDocnumClient() as adocnum:
        assert (await adocnum.next(name)).number == "T-2"
    monkeypatch.delenv("DOCNUM_API_KEY")
    with pytest.raises(ValueError, match="DOCNUM_API_KEY"):
        DocnumClient()


async def test_a_given_http_client_transport_and_timeout_carry_the_requests(
    service: ServiceProcess, tenant: Tenant
) -> None:
    name = await make_series(service, tenant, "given")
    seen: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [seen.append]}) as http:
        with DocnumClient(service.url, tenant.issue_key, http=http) as docnum:
            assert docnum.next(name).value == 1
        assert not http.is_closed  # the caller's client stays the caller's
    assert seen[0].headers["Authorization"] == f"Bearer {tenant.issue_key}"
    timeout = httpx.Timeout(5.0, connect=1.0)
    async with (
        httpx.AsyncClient(timeout=timeout) as ahttp,
        AsyncDocnumClient(service.url, tenant.issue_key, http=ahttp) as adocnum,
    ):
        assert (await adocnum.next(name)).value == 2

    def refuse(request: httpx.Request) -> httpx.Response:
        problem = {"type": "/problems/series-archived", "title": "Series is archived"}
        return httpx.Response(409, json=problem, headers={"X-Request-ID": "r-1"})

    transport = httpx.MockTransport(refuse)
    with (
        DocnumClient("http://docnum.test", "dn_x", transport=transport, timeout=timeout) as docnum,
        pytest.raises(SeriesArchived) as caught,
    ):
        docnum.next(name)
    assert caught.value.request_id == "r-1"
    with pytest.raises(ValueError, match="transport"):
        DocnumClient(service.url, "dn_x", http=httpx.Client(), transport=transport)


# --- errors


async def test_unknown_series_raises_series_not_found(
    service: ServiceProcess, tenant: Tenant
) -> None:
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        with pytest.raises(SeriesNotFound) as caught:
            docnum.next("missing")
        with pytest.raises(SeriesNotFound):
            docnum.batch("missing", 2)
    error = caught.value
    assert isinstance(error, NotFound)
    assert (error.status, error.type, error.title) == (
        404,
        "/problems/series-not-found",
        "Series not found",
    )
    assert "missing" in error.detail
    assert error.instance == "/series/missing/next"
    assert not error.retryable


async def test_unknown_key_raises_unauthorized(service: ServiceProcess) -> None:
    with (
        DocnumClient(service.url, "dn_00000000_" + "x" * 43) as docnum,
        pytest.raises(Unauthorized) as caught,
    ):
        docnum.next("any")
    assert (caught.value.status, caught.value.type) == (401, "/problems/unauthorized")


async def test_archived_and_exhausted_series_raise_conflicts(
    service: ServiceProcess, tenant: Tenant
) -> None:
    archived = await make_series(service, tenant, "old")
    await archive(service, tenant, archived)
    full = await make_series(service, tenant, "small", max_value=2)
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        with pytest.raises(SeriesArchived) as archived_error:
            docnum.next(archived)
        with pytest.raises(SeriesExhausted) as exhausted_error:
            docnum.batch(full, 3)
        assert docnum.batch(full, 2).values == (1, 2)
        with pytest.raises(SeriesExhausted):
            docnum.next(full)
    assert isinstance(archived_error.value, Conflict)
    assert archived_error.value.type == "/problems/series-archived"
    assert (exhausted_error.value.status, exhausted_error.value.type) == (
        409,
        "/problems/series-exhausted",
    )


async def test_the_series_rules_read_back_and_raise_their_conflicts(
    service: ServiceProcess, tenant: Tenant
) -> None:
    with DocnumClient(service.url, tenant.admin_key) as docnum:
        created = docnum.create_series(
            "ruled", "R/{FY:YY-YY}/{seq}", reset="yearly", fiscal_year_start=4, max_value=999
        )
        ruled = docnum.update_series(
            "ruled",
            date_order="strict",
            closed_through="2026-03-31",
            number_profile="in-gst",
            warn_remaining=10,
        )
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        with pytest.raises(PeriodClosed):
            docnum.next("ruled", datetime.date(2026, 3, 31))
        assert docnum.next("ruled", datetime.date(2026, 4, 2)).number == "R/26-27/1"
        with pytest.raises(DateOrder):
            docnum.next("ruled", datetime.date(2026, 4, 1))
    assert (created.date_order, created.closed_through, created.number_profile) == (
        "off",
        None,
        None,
    )
    assert (ruled.date_order, ruled.closed_through) == ("strict", datetime.date(2026, 3, 31))
    assert (ruled.number_profile, ruled.max_length, ruled.allowed_characters) == (
        "in-gst",
        None,
        None,
    )
    assert ruled.warn_remaining == 10


async def test_invalid_requests_raise_with_field_errors(
    service: ServiceProcess, tenant: Tenant
) -> None:
    name = await make_series(service, tenant, "shop", format="{var:shop}-{seq}")
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        with pytest.raises(InvalidRequest) as no_count:
            docnum.batch(name, 0)
        with pytest.raises(InvalidRequest) as no_variable:
            docnum.next(name)
        docnum.next(name, date=DAY, variables={"shop": "A"}, idempotency_key="k1")
        with pytest.raises(IdempotencyKeyReused) as reused:
            docnum.next(name, date=DAY, variables={"shop": "B"}, idempotency_key="k1")
    assert no_count.value.status == 422
    assert [e["field"] for e in no_count.value.errors] == ["count"]
    assert [e["field"] for e in no_variable.value.errors] == ["variables"]
    assert isinstance(reused.value, InvalidRequest)
    assert reused.value.type == "/problems/idempotency-key-reused"
    assert await ledger(service, tenant, name) == [1]


async def test_real_problem_responses_map_to_their_classes(
    service: ServiceProcess, tenant: Tenant
) -> None:
    """Kinds the two calls cannot provoke, read from the service's own answers."""
    async with httpx.AsyncClient(base_url=service.url, headers=tenant.issuer) as http:
        forbidden = await http.post("/series", json={"name": "x", "format": "{seq}"})
        no_route = await http.get("/no-such-route")
    assert isinstance(from_response(forbidden), Forbidden)
    not_found = from_response(no_route)
    assert type(not_found) is NotFound
    assert not_found.type == "/problems/not-found"


def test_errors_survive_pickling() -> None:
    response = httpx.Response(
        409,
        json={"type": "/problems/series-exhausted", "title": "Series is exhausted", "detail": "d"},
    )
    error = pickle.loads(pickle.dumps(from_response(response)))
    assert isinstance(error, SeriesExhausted)
    assert (error.status, error.type, error.title, error.detail) == (
        409,
        "/problems/series-exhausted",
        "Series is exhausted",
        "d",
    )


@pytest.mark.parametrize(
    ("response", "kind", "retryable"),
    [
        (
            httpx.Response(409, json={"type": "/problems/idempotency-key-in-flight"}),
            IdempotencyKeyInFlight,
            True,
        ),
        (httpx.Response(409, json={"type": "/problems/some-new-conflict"}), Conflict, False),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), Unavailable, True),
        (httpx.Response(500, text="oops"), DocnumError, False),
    ],
)
def test_unknown_and_non_problem_answers_fall_back_by_status(
    response: httpx.Response, kind: type[DocnumError], retryable: bool
) -> None:
    error = from_response(response)
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status == response.status_code


# --- retries


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_lost_answer_is_retried_with_the_same_key_and_costs_one_number(
    service: ServiceProcess,
    tenant: Tenant,
    proxy: LossyProxy,
    flavour: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = await make_series(service, tenant, "lost")
    proxy.drop = 1
    caplog.set_level(logging.WARNING, logger="docnum_client")
    if flavour == "sync":
        with DocnumClient(proxy.url, tenant.issue_key) as docnum:
            issued = docnum.next(name, date=DAY)
    else:
        async with AsyncDocnumClient(proxy.url, tenant.issue_key) as adocnum:
            issued = await adocnum.next(name, date=DAY)
    first, retry = proxy.exchanges
    assert (first.status, first.dropped, first.replayed) == (201, True, False)
    assert (retry.status, retry.dropped, retry.replayed) == (201, False, True)
    assert first.idempotency_key is not None
    assert uuid.UUID(first.idempotency_key).version == 4
    assert retry.idempotency_key == first.idempotency_key
    assert (issued.number, issued.value) == ("T-1", 1)
    assert issued.replayed
    assert await ledger(service, tenant, name) == [1]
    (retried,) = [r for r in caplog.records if r.name == "docnum_client"]
    assert retried.getMessage().startswith(f"retrying POST /series/{name}/next in ")
    assert "attempt 1 of 4" in retried.getMessage()


async def test_lost_batch_answer_is_not_issued_twice(
    service: ServiceProcess, tenant: Tenant, proxy: LossyProxy
) -> None:
    name = await make_series(service, tenant, "lostbatch")
    proxy.drop = 2
    with DocnumClient(proxy.url, tenant.issue_key) as docnum:
        batch = docnum.batch(name, 4)
        after = docnum.next(name)
    assert len({e.idempotency_key for e in proxy.exchanges[:3]}) == 1
    assert [e.dropped for e in proxy.exchanges] == [True, True, False, False]
    assert batch.values == (1, 2, 3, 4)
    assert after.value == 5
    assert sorted(await ledger(service, tenant, name)) == [1, 2, 3, 4, 5]


async def _lock_counter(conn: asyncpg.Connection, tenant: Tenant, name: str) -> None:
    """Hold the counter row of the series, as a long transaction elsewhere would."""
    await conn.execute(
        "SELECT 1 FROM counters c JOIN series s ON s.id = c.series_id "
        "WHERE s.tenant_id = $1 AND s.name = $2 FOR UPDATE OF c",
        tenant.id,
        name,
    )


async def test_unavailable_is_retried_after_retry_after_until_it_succeeds(
    service: ServiceProcess, tenant: Tenant, proxy: LossyProxy, pool: asyncpg.Pool
) -> None:
    name = await make_series(service, tenant, "busy")
    async with AsyncDocnumClient(proxy.url, tenant.issue_key, max_attempts=20) as docnum:
        assert (await docnum.next(name)).value == 1
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await _lock_counter(conn, tenant, name)
            issuing = asyncio.create_task(docnum.next(name))
            try:
                refused_twice = await asyncio.to_thread(
                    proxy.wait_for, lambda seen: sum(e.status == 503 for e in seen) >= 2
                )
                assert refused_twice, proxy.exchanges
            finally:
                await transaction.rollback()
        issued = await issuing
    attempts = proxy.exchanges[1:]
    assert [e.status for e in attempts[:-1]] == [503] * (len(attempts) - 1)
    assert attempts[-1].status == 201
    assert len({e.idempotency_key for e in attempts}) == 1
    assert issued.value == 2
    assert await ledger(service, tenant, name) == [1, 2]


async def test_retries_are_bounded_by_max_attempts(
    service: ServiceProcess, tenant: Tenant, proxy: LossyProxy, pool: asyncpg.Pool
) -> None:
    name = await make_series(service, tenant, "stuck")
    async with AsyncDocnumClient(proxy.url, tenant.issue_key, max_attempts=2) as docnum:
        assert (await docnum.next(name)).value == 1
        async with pool.acquire() as conn, conn.transaction():
            await _lock_counter(conn, tenant, name)
            with pytest.raises(Unavailable) as caught:
                await docnum.next(name)
    assert [e.status for e in proxy.exchanges] == [201, 503, 503]
    assert proxy.exchanges[1].idempotency_key == proxy.exchanges[2].idempotency_key
    assert (caught.value.status, caught.value.type) == (503, "/problems/unavailable")
    assert caught.value.retry_after == 1.0
    assert await ledger(service, tenant, name) == [1]


def test_no_service_raises_service_unreachable_after_max_attempts() -> None:
    with (
        DocnumClient(f"http://127.0.0.1:{free_port()}", "dn_x", max_attempts=2) as docnum,
        pytest.raises(ServiceUnreachable) as caught,
    ):
        docnum.next("any")
    assert caught.value.status is None
    assert "ConnectError" in caught.value.detail
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


# --- the retry policy


def test_backoff_grows_with_jitter_and_stops_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=10.0)
    down = ServiceUnreachable(None, "about:blank", "Service unreachable", "refused")
    for attempt, (low, high) in enumerate([(0.25, 0.5), (0.5, 1.0), (1.0, 2.0)], start=1):
        delays = {policy.delay(down, attempt) for _ in range(50)}
        assert all(d is not None and low <= d <= high for d in delays), delays
        assert len(delays) > 1  # jittered
    assert policy.delay(down, 4) is None


def test_retry_after_is_obeyed_and_never_exceeded_silently() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=10.0)
    busy = Unavailable(503, "/problems/unavailable", "Unavailable", "x", retry_after=3.0)
    too_long = Unavailable(503, "/problems/unavailable", "Unavailable", "x", retry_after=60.0)
    wrong = InvalidRequest(422, "/problems/invalid-request", "Invalid", "x")
    delay = policy.delay(busy, 1)
    assert delay is not None and 3.0 <= delay <= 3.5
    assert policy.delay(too_long, 1) is None
    assert policy.delay(wrong, 1) is None


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Fri, 01 May 2026 12:00:05 GMT", now=now.timestamp()) == 5.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_max_attempts_must_allow_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        DocnumClient("http://127.0.0.1:1", "dn_x", max_attempts=0)
