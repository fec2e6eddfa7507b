"""The tenant rate limiter: shared buckets in the store, leased to each process in small batches."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from app.errors import RateLimited
from app.security.ratelimit import LEASE_SECONDS, TenantRateLimiter
from app.store import MemoryStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Clocks:
    def __init__(self):
        self.now, self.mono = T0, 100.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def clocks():
    return Clocks()


def limiter(store, clocks, *, rate, burst):
    return TenantRateLimiter(store, rate=rate, burst=burst, clock=lambda: clocks.now, monotonic=lambda: clocks.mono)


def left_in_bucket(store, tenant_id, *, rate, burst, now):
    return store.take_tokens(f"tenant:{tenant_id}", want=10**6, rate=rate, burst=burst, now=now)[0]


def test_a_process_leases_a_tenth_of_a_second_of_tokens_at_once(clocks):
    store = MemoryStore()
    limit = limiter(store, clocks, rate=100, burst=1000)
    for _ in range(10):
        limit.check("tn_a")
    assert left_in_bucket(store, "tn_a", rate=100, burst=1000, now=clocks.now) == 990


def test_processes_sharing_a_store_never_accept_more_than_the_bucket(clocks):
    store = MemoryStore()
    processes = [limiter(store, clocks, rate=1000, burst=30) for _ in range(3)]
    accepted = 0
    for attempt in range(60):
        try:
            processes[attempt % 3].check("tn_a")
            accepted += 1
        except RateLimited as refused:
            assert refused.retry_after >= 1
    assert accepted == 30


def test_unused_leased_tokens_expire(clocks):
    store = MemoryStore()
    limit = limiter(store, clocks, rate=500, burst=1000)  # leases of 50
    limit.check("tn_a")
    limit.check("tn_a")  # from the lease: the store is not asked
    assert left_in_bucket(store, "tn_a", rate=500, burst=1000, now=clocks.now) == 950
    store = MemoryStore()
    limit = limiter(store, clocks, rate=500, burst=1000)
    limit.check("tn_a")
    clocks.mono += LEASE_SECONDS  # the lease runs out; the store's clock stands still, so no refill
    limit.check("tn_a")
    assert left_in_bucket(store, "tn_a", rate=500, burst=1000, now=clocks.now) == 900


def test_tenants_have_separate_buckets(clocks):
    store = MemoryStore()
    limit = limiter(store, clocks, rate=0.01, burst=2)
    limit.check("tn_a"), limit.check("tn_a")
    with pytest.raises(RateLimited):
        limit.check("tn_a")
    limit.check("tn_b")


class RacingStore:
    """A store whose first `racing` token takers all reach it before any of them goes on, as in a burst."""

    def __init__(self, store, racing: int):
        self._store = store
        self.barrier = threading.Barrier(racing)
        self.racing = racing

    def take_tokens(self, *args, **kwargs):
        taken = self._store.take_tokens(*args, **kwargs)
        if self.racing > 0:
            self.racing -= 1
            self.barrier.wait(timeout=5)
        return taken


def test_leases_taken_by_racing_threads_are_pooled_not_lost(clocks):
    store, racing = MemoryStore(), 8
    limit = limiter(RacingStore(store, racing), clocks, rate=100, burst=1000)
    threads = [threading.Thread(target=limit.check, args=("acme",)) for _ in range(racing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    for _ in range(racing * 9):  # each racer leased 10 and spent 1: 72 are left in this process
        limit.check("acme")

    assert left_in_bucket(store, "acme", rate=100, burst=1000, now=clocks.now) == 1000 - racing * 10
