"""Rate limits per API key and per tenant, applied once, right after a request is authenticated.

Two quota policies and a cap, each off unless configured (``DOCNUM_KEY_RATE_LIMIT``,
``DOCNUM_TENANT_RATE_LIMIT``, in the ``limits`` library's notation: ``600/minute``):

- ``"key"``: the requests one key (by its prefix) may make in the window;
- ``"tenant"``: the requests all keys of one tenant may make together in the window;

and the cap ``DOCNUM_MAX_CONCURRENT_REQUESTS_PER_TENANT``: the requests one tenant may have in
progress at once (policy ``"concurrency"``, in ``concurrent-requests``).

Invariants, and why they hold:

- Every authenticated request passes ``Services.authenticate`` (app.services), the one method
  that both the lean path (app.fastpath) and FastAPI's dependencies (app.deps) call, so no route
  escapes the limits and none counts a request twice.
- A refused request costs no quota: both policies are tested before either is hit, and a request
  is counted against both or neither. The event loop runs one check at a time, so nothing else
  is counted between the test and the hit.
- The window moves (``limits``' moving window, in memory): at no instant do the last ``w``
  seconds hold more than ``q`` admitted requests of one key or tenant, with no burst at a fixed
  window's edge.
- A tenant has at most ``DOCNUM_MAX_CONCURRENT_REQUESTS_PER_TENANT`` requests in progress (when
  set), so it cannot take all of the process's ``max_concurrent_requests`` and the pool with it:
  a request takes a place when admitted and app.middleware gives it back when its answer is
  finished, however it ended (the place is recorded in the scope, and the request layer's
  ``finally`` reads it). A place is taken before the rate is counted, so a request refused for
  concurrency costs no quota.
- Limits are per process: each process counts only what it served. With N processes behind one
  address a key may make up to N times its quota (as many as its requests reach each process).
- Answers carry the IETF ``RateLimit-Policy`` and ``RateLimit`` fields
  (draft-ietf-httpapi-ratelimit-headers-10): the policies that apply, and the one with the fewest
  requests left; a refusal is a 429 ``rate-limited`` problem whose ``Retry-After`` is when the
  oldest request leaves the window, and equals the ``t`` of its ``RateLimit``.
"""

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import Scope

from app.auth import Principal
from app.problems import RateLimited

# Where the limits' header fields of an admitted request wait in the ASGI scope for its answer
# (app.middleware adds them to whatever answers it).
SCOPE_HEADERS = "docnum.rate_limit_headers"

# The tenant whose place an admitted request holds, when their number is capped.
SCOPE_TENANT = "docnum.rate_limit_tenant"

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Policy:
    name: str  # its identifier in the header fields
    item: RateLimitItem

    @property
    def field(self) -> str:
        """This policy as an item of ``RateLimit-Policy``: its quota ``q`` and window ``w``."""
        return f'"{self.name}";q={self.item.amount};w={self.item.get_expiry()}'


class RateLimits:
    """The configured policies of one process and what each key and tenant used of them."""

    def __init__(
        self, key_limit: str | None, tenant_limit: str | None, tenant_concurrency: int | None
    ) -> None:
        self._policies = [
            Policy(name, parse(limit))
            for name, limit in (("key", key_limit), ("tenant", tenant_limit))
            if limit
        ]
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._policy_header = (
            b"ratelimit-policy",
            ", ".join(policy.field for policy in self._policies).encode(),
        )
        self._concurrency = tenant_concurrency
        self._in_progress: dict[int, int] = {}  # tenant id -> its requests in progress

    def admit(self, principal: Principal, scope: Scope) -> None:
        """Admit one request of ``principal``, or raise :class:`RateLimited`. An admitted request
        holds one of its tenant's places until :meth:`finished`, and its answer's header fields
        wait in ``scope``."""
        if self._concurrency is not None:
            self._take_place(principal.tenant_id)
            scope[SCOPE_TENANT] = principal.tenant_id
        if self._policies:
            scope[SCOPE_HEADERS] = self._count(principal)

    def finished(self, tenant: int) -> None:
        """Give back the place that :meth:`admit` gave a request of ``tenant``."""
        left = self._in_progress[tenant] - 1
        if left:
            self._in_progress[tenant] = left
        else:
            del self._in_progress[tenant]

    def _take_place(self, tenant: int) -> None:
        taken = self._in_progress.get(tenant, 0)
        if self._concurrency is not None and taken >= self._concurrency:
            raise RateLimited(
                f"The tenant has {taken} requests in progress, as many as allowed; retry.",
                headers={
                    "Retry-After": "1",
                    "RateLimit-Policy": f'"concurrency";q={self._concurrency};'
                    'qu="concurrent-requests"',
                    "RateLimit": '"concurrency";r=0;t=1',
                },
            )
        self._in_progress[tenant] = taken + 1

    def _count(self, principal: Principal) -> list[Header]:
        """Count one request of ``principal`` and return the header fields for its answer, or
        raise :class:`RateLimited` (counting nothing) when a policy has no request left."""
        partitions = [(policy, self._partition(policy, principal)) for policy in self._policies]
        for policy, partition in partitions:
            if not self._limiter.test(policy.item, partition):
                seconds = self._reset_seconds(policy, partition)
                raise RateLimited(
                    f"The {policy.name}'s limit of {policy.item} is reached; "
                    f"retry in {seconds} seconds.",
                    headers={
                        "Retry-After": str(seconds),
                        "RateLimit-Policy": self._policy_header[1].decode(),
                        "RateLimit": f'"{policy.name}";r=0;t={seconds}',
                    },
                )
        for policy, partition in partitions:
            self._limiter.hit(policy.item, partition)
        remaining, seconds, name = min(
            (stats.remaining, _seconds_until(stats.reset_time), policy.name)
            for policy, partition in partitions
            for stats in [self._limiter.get_window_stats(policy.item, partition)]
        )
        return [self._policy_header, (b"ratelimit", f'"{name}";r={remaining};t={seconds}'.encode())]

    @staticmethod
    def _partition(policy: Policy, principal: Principal) -> str:
        return principal.prefix if policy.name == "key" else str(principal.tenant_id)

    def _reset_seconds(self, policy: Policy, partition: str) -> int:
        return _seconds_until(self._limiter.get_window_stats(policy.item, partition).reset_time)


def _seconds_until(reset_time: float) -> int:
    """Whole seconds until a partition's oldest request leaves the window (at least 1)."""
    return max(1, math.ceil(reset_time - time.time()))
