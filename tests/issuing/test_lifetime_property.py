"""A stateful property: whatever the series, formats, dates, variables, changes and numbering by
hand, no rendered number comes out twice, and every gapless counter is gapless.

Hypothesis drives two real ``docnum serve`` processes on one database: it creates series of every
mode and reset with random formats (date tokens, variables, literals with digits), issues single
numbers and batches at either process with random dates and variables, reserves numbers and
confirms or releases them (a released gapless number may be handed out again), sets counters
upwards by hand, records the next number as one issued elsewhere, and changes formats (now or
from a date) and structural fields in between. A process that did not make a change learns of it
by notification, so requests there may run on a definition that just changed. After every step:
every number ever answered for a series (issued, confirmed, recorded, or reserved and not
released) is distinct, and the ledger of each gapless counter (period and variable values) holds
exactly start, start + step, … with no hole.

Run it longer with ``DOCNUM_PROPERTY_EXAMPLES=500 .venv/bin/python -m pytest
tests/issuing/test_lifetime_property.py``.
"""

import itertools
import os
import secrets
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness.processes import PATIENT, SMALL_POOL, ServiceProcess, services
from harness.tenants import Tenant

pytestmark = pytest.mark.xdist_group("processes")

EXAMPLES = int(os.environ.get("DOCNUM_PROPERTY_EXAMPLES", "12"))

# Pieces that make formats collide easily: digits and separators next to tokens.
PIECES = ["A", "-", "/", "1", "0", "{YY}", "{YYYY}", "{MM}", "{Q}", "{var:b}", "{var:c}", "-{YY}-"]
SEQS = ["{seq}", "{seq:02}", "{seq:03}"]
# A format as its pieces, so that a change can be a small edit of the one in force.
formats = st.builds(
    lambda before, seq, after: [*before, seq, *after],
    st.lists(st.sampled_from(PIECES), max_size=4),
    st.sampled_from(SEQS),
    st.lists(st.sampled_from(PIECES), max_size=2),
)
# Edits of a format: the changes most likely to render an earlier number again.
edits = st.tuples(
    st.sampled_from(["insert", "delete", "replace"]),
    st.integers(0, 6),
    st.sampled_from(PIECES + SEQS),
)
# Dates a century apart, at year and month edges, and some outside the window.
DATES = [
    "2000-01-01",
    "2001-01-31",
    "2012-12-12",
    "2026-01-31",
    "2026-12-31",
    "2027-01-01",
    "2099-12-31",
    "1926-05-01",
    "2126-05-01",
]
dates = st.one_of(st.none(), st.sampled_from(DATES))
variables = st.fixed_dictionaries(
    {"b": st.sampled_from(["x", "x-1", "1", "y-2"]), "c": st.sampled_from(["x", "1", "z-1"])}
)
# A number or a batch, at either process, for a date and variable values.
ISSUING = {
    "at": st.integers(0, 1),
    "date": dates,
    "values": variables,
    "count": st.sampled_from([1, 2, 13, 60, 130]),
}
STRUCTURAL = st.one_of(
    st.fixed_dictionaries({"mode": st.sampled_from(["gapless", "sequence", "cached"])}),
    st.fixed_dictionaries({"reset": st.sampled_from(["never", "yearly", "monthly"])}),
    st.fixed_dictionaries({"start": st.integers(0, 3)}),
    st.fixed_dictionaries({"step": st.integers(1, 3)}),
    st.fixed_dictionaries({"shared_counter": st.booleans()}),
)


class Lifetime(RuleBasedStateMachine):
    """The model: every number each series answered, and which series are gapless."""

    series = Bundle("series")

    def __init__(self, processes: list[ServiceProcess], tenant: Tenant) -> None:
        super().__init__()
        self.http = httpx.Client(timeout=30)
        self.urls = [p.url for p in processes]
        self.tenant = tenant
        self.names = (f"s{secrets.token_hex(3)}-{i}" for i in itertools.count())
        self.answered: dict[str, list[str]] = defaultdict(list)
        # Reservations not settled yet: (series, process, id) and the numbers they hold.
        self.held: dict[tuple[str, int, str], list[str]] = {}
        self.formats: dict[str, list[str]] = {}
        self.gapless: set[str] = set()

    @initialize(target=series)
    def a_gapless_series_with_a_variable(self) -> Any:
        return self._create("gapless", "yearly", ["A-", "{YYYY}", "-{var:b}/", "{seq}"], False)

    @initialize(target=series)
    def a_series_with_no_ledger_and_a_digit_before_its_counter(self) -> Any:
        """Nothing but the rules stands between this one and a repeat (F-1{seq} -> F-{seq})."""
        return self._create("sequence", "never", ["A", "1", "{seq}"], False, ledger=False)

    @precondition(lambda self: len(self.formats) < 3)
    @rule(
        target=series,
        mode=st.sampled_from(["gapless", "sequence", "cached"]),
        reset=st.sampled_from(["never", "yearly", "monthly", "daily"]),
        source=formats,
        shared=st.booleans(),
        ledger=st.booleans(),
    )
    def create(self, mode: str, reset: str, source: list[str], shared: bool, ledger: bool) -> str:
        """Without a ledger, nothing but the rules stands between a format and a repeat."""
        return self._create(mode, reset, source, shared, ledger or mode == "gapless")

    def _create(
        self, mode: str, reset: str, pieces: list[str], shared: bool, ledger: bool = True
    ) -> Any:
        name = next(self.names)
        body = {
            "name": name,
            "format": "".join(pieces),
            "mode": mode,
            "reset": reset,
            "ledger": ledger,
            "block_size": 3,
            "shared_counter": shared,
        }
        response = self.http.post(f"{self.urls[0]}/series", json=body, headers=self.tenant.admin)
        # A format that cannot tell periods or counters apart is refused: no series to use.
        assert response.status_code in (201, 422), response.text
        if response.status_code != 201:
            return multiple()
        self.formats[name] = pieces
        if mode == "gapless":
            self.gapless.add(name)
        return name

    @rule(name=series, **ISSUING)
    def issue_too(
        self, name: str, at: int, date: str | None, values: dict[str, str], count: int
    ) -> None:
        """A second rule for the same step, so that issuing is drawn twice as often as the rest."""
        self.issue(name, at, date, values, count)

    @rule(name=series, **ISSUING)
    def issue(
        self, name: str, at: int, date: str | None, values: dict[str, str], count: int
    ) -> None:
        body: dict[str, Any] = {"variables": values, "count": count}
        if date is not None:
            body["date"] = date
        response = self.http.post(
            f"{self.urls[at]}/series/{name}/batch", json=body, headers=self.tenant.issuer
        )
        assert response.status_code in (201, 404, 409, 422), response.text
        if response.status_code == 201:
            self.answered[name].extend(response.json()["numbers"])

    @rule(
        name=series,
        **ISSUING,
        pick=st.one_of(st.none(), st.integers(0, 1000)),
        confirm=st.booleans(),
    )
    def reserve(
        self,
        name: str,
        at: int,
        date: str | None,
        values: dict[str, str],
        count: int,
        pick: int | None,
        confirm: bool,
    ) -> None:
        """Reserve numbers, having first settled an earlier reservation unless ``pick`` is None:
        reservations are settled about as often as they are made, in any order."""
        if pick is not None and self.held:
            self.settle(pick, confirm)
        body: dict[str, Any] = {"variables": values, "count": count}
        if date is not None:
            body["date"] = date
        response = self.http.post(
            f"{self.urls[at]}/series/{name}/reservations", json=body, headers=self.tenant.issuer
        )
        assert response.status_code in (201, 404, 409, 422), response.text
        if response.status_code == 201:
            self.held[name, at, response.json()["id"]] = response.json()["numbers"]

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000), confirm=st.booleans())
    def settle(self, pick: int, confirm: bool) -> None:
        """Confirm a reservation (its numbers are issued) or release it (they may come again)."""
        key = sorted(self.held)[pick % len(self.held)]
        name, at, reservation = key
        url = f"{self.urls[at]}/series/{name}/reservations/{reservation}"
        if confirm:
            response = self.http.post(f"{url}/confirm", json={}, headers=self.tenant.issuer)
        else:
            response = self.http.delete(url, headers=self.tenant.issuer)
        assert response.status_code == 200, response.text
        numbers = self.held.pop(key)
        if confirm:
            self.answered[name].extend(numbers)

    @rule(name=series, at=st.integers(0, 1), date=dates, values=variables, jump=st.integers(0, 4))
    def set_counter(
        self, name: str, at: int, date: str | None, values: dict[str, str], jump: int
    ) -> None:
        """Go-live: the counter of the next number moves up, past it by ``jump`` values."""
        preview = self._preview(name, at, date, values)
        if preview is None:
            return
        body = {
            "last_value": preview["value"] + jump,
            "reason": "go-live",
            "variables": values,
            "date": preview["date"],
        }
        response = self.http.put(
            f"{self.urls[at]}/series/{name}/counters/{preview['period']}",
            json=body,
            headers=self.tenant.admin,
        )
        # 409: another process took values meanwhile, so the counter is not raised by this.
        assert response.status_code in (200, 404, 409, 422), response.text

    @rule(name=series, at=st.integers(0, 1), date=dates, values=variables)
    def record_external(self, name: str, at: int, date: str | None, values: dict[str, str]) -> None:
        """The next number, recorded as issued elsewhere: the series must never hand it out."""
        preview = self._preview(name, at, date, values)
        if preview is None:
            return
        body = {"number": preview["number"], "date": preview["date"]}
        response = self.http.post(
            f"{self.urls[at]}/series/{name}/numbers", json=body, headers=self.tenant.admin
        )
        # 409: taken meanwhile, or in cached mode held by a process; 422: no ledger, or the
        # number reads as another format's.
        assert response.status_code in (201, 404, 409, 422), response.text
        if response.status_code == 201:
            self.answered[name].append(preview["number"])

    def _preview(
        self, name: str, at: int, date: str | None, values: dict[str, str]
    ) -> dict[str, Any] | None:
        params = {"variables": ",".join(f"{k}={v}" for k, v in sorted(values.items()))}
        if date is not None:
            params["date"] = date
        response = self.http.get(
            f"{self.urls[at]}/series/{name}/next-preview", params=params, headers=self.tenant.admin
        )
        assert response.status_code in (200, 404, 409, 422), response.text
        return response.json() if response.status_code == 200 else None

    @rule(name=series, at=st.integers(0, 1), edit=edits, since=dates)
    def change_format(
        self, name: str, at: int, edit: tuple[str, int, str], since: str | None
    ) -> None:
        operation, at_piece, piece = edit
        pieces = list(self.formats[name])
        where = at_piece % (len(pieces) + 1)
        if operation == "insert":
            pieces.insert(where, piece)
        elif where < len(pieces):
            if operation == "delete":
                del pieces[where]
            else:
                pieces[where] = piece
        body = {"format": "".join(pieces)} | ({"effective_from": since} if since else {})
        response = self.http.patch(
            f"{self.urls[at]}/series/{name}", json=body, headers=self.tenant.admin
        )
        assert response.status_code in (200, 404, 409, 422), response.text
        if response.status_code == 200:
            self.formats[name] = pieces

    @rule(name=series, at=st.integers(0, 1), change=STRUCTURAL)
    def change_structure(self, name: str, at: int, change: dict[str, Any]) -> None:
        url = f"{self.urls[at]}/series/{name}"
        before = self.http.get(url, headers=self.tenant.admin).json()
        response = self.http.patch(url, json=change, headers=self.tenant.admin)
        assert response.status_code in (200, 404, 409, 422), response.text
        if response.status_code == 200 and any(before[k] != v for k, v in change.items()):
            assert not self.answered[name], "a structural change after the first number"
            assert not any(key[0] == name for key in self.held), "… or a reservation"
            if response.json()["mode"] == "gapless":
                self.gapless.add(name)
            else:
                self.gapless.discard(name)

    @invariant()
    def no_number_twice(self) -> None:
        numbers = defaultdict(list, {name: list(taken) for name, taken in self.answered.items()})
        for (name, _, _), held in self.held.items():
            numbers[name].extend(held)
        for name, taken in numbers.items():
            assert len(taken) == len(set(taken)), (name, sorted(taken))

    @invariant()
    def every_gapless_counter_is_gapless(self) -> None:
        for name in self.gapless:
            series = self.http.get(f"{self.urls[0]}/series/{name}", headers=self.tenant.admin)
            start, step = series.json()["start"], series.json()["step"]
            by_counter: dict[tuple[str, str], list[int]] = defaultdict(list)
            recorded: set[str] = set()
            for entry in self._ledger(name):
                key = (entry["period"], repr(sorted(entry["variables"].items())))
                by_counter[key].append(entry["value"])
                recorded.add(entry["number"])
            for key, values in by_counter.items():
                expected = [start + step * i for i in range(len(values))]
                assert sorted(values) == expected, (name, key, sorted(values))
            assert set(self.answered[name]) <= recorded, name

    def _ledger(self, name: str) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = self.http.get(
                f"{self.urls[0]}/series/{name}/numbers", params=params, headers=self.tenant.admin
            ).json()
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def teardown(self) -> None:
        self.http.close()


def test_no_rendered_number_twice_whatever_the_changes(
    database_url: str, service_dir: Path, tenant: Tenant
) -> None:
    with services(database_url, service_dir, 2, env={**SMALL_POOL, **PATIENT}) as processes:
        run_state_machine_as_test(
            lambda: Lifetime(processes, tenant),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
