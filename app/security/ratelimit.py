"""Per-tenant rate limit: token buckets kept in the store, so every gunicorn process shares them.

Taking a token from the store is a write transaction; doing one per webhook would double the writes
of the hot path. So each process takes a small lease of tokens at once (a tenth of a second's
refill, at most LEASE_MAX) and hands them out locally for up to LEASE_SECONDS. The limit stays exact
in one direction: together the processes never accept more than the bucket allows; a lease that
expires unused is simply lost, which can only make the limit stricter for a moment."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from app.errors import RateLimited
from app.models import utcnow
from app.store import Store

LEASE_MAX = 50
LEASE_SECONDS = 1.0


@dataclass
class _Lease:
    tokens: int
    expires: float


class TenantRateLimiter:
    def __init__(self, store: Store, *, rate: float, burst: float, clock: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._rate = rate
        self._burst = burst
        self._lease_size = max(1, min(LEASE_MAX, int(rate / 10), int(burst / 10)))
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._leases: dict[str, _Lease] = {}

    def check(self, tenant_id: str) -> None:
        """Spend one of the tenant's tokens, or raise RateLimited with the seconds to wait."""
        if self._spend_leased(tenant_id):
            return
        taken, wait = self._store.take_tokens(f"tenant:{tenant_id}", want=self._lease_size, rate=self._rate,
                                              burst=self._burst, now=self._clock())
        if taken == 0:
            raise RateLimited("tenant rate limit exceeded", retry_after=max(1, math.ceil(wait)))
        if taken > 1:
            self._add_lease(tenant_id, taken - 1)

    def _add_lease(self, tenant_id: str, tokens: int) -> None:
        # Threads that found the lease empty at the same moment each take one from the store: add theirs
        # together, so none is thrown away (that would spend several tokens per webhook under a burst).
        with self._lock:
            lease = self._leases.get(tenant_id)
            if lease is not None and self._monotonic() < lease.expires:
                lease.tokens += tokens
            else:
                self._leases[tenant_id] = _Lease(tokens, self._monotonic() + LEASE_SECONDS)

    def _spend_leased(self, tenant_id: str) -> bool:
        with self._lock:
            lease = self._leases.get(tenant_id)
            if lease is None or lease.tokens == 0 or self._monotonic() >= lease.expires:
                self._leases.pop(tenant_id, None)
                return False
            lease.tokens -= 1
            return True
