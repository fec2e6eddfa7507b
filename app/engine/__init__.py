"""The execution engine: `create_engine` builds the bounded thread pool from the app's settings."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

from urllib3 import PoolManager

from app.config import DEFAULTS, coerce
from app.engine.base import Engine, EngineStats
from app.engine.cancel import CancelToken
from app.engine.credentials import CredentialResolver
from app.engine.http import HttpClient
from app.engine.pool import BoundedExecutor
from app.engine.retention import Retention
from app.engine.runner import RetryPolicy, Runner, Sleep
from app.engine.supervisor import SupervisorTiming
from app.metrics import Metrics
from app.models import new_id, utcnow
from app.security.breaker import HostBreakers
from app.security.crypto import SecretBox
from app.security.ssrf import AddressPolicy
from app.store.base import Store
from app.tracing import NO_TRACING, Tracing

__all__ = ["BoundedExecutor", "CancelToken", "Engine", "EngineStats", "create_engine"]


def create_engine(store: Store, config: Mapping[str, Any], metrics: Metrics, *,
                  manager_factory: Callable[[int], PoolManager] | None = None,
                  clock: Callable[[], datetime] | None = None, sleep: Sleep | None = None,
                  tracing: Tracing = NO_TRACING) -> Engine:
    """Build (not start) a BoundedExecutor from WORKERS, QUEUE_SIZE, JOB_TIMEOUT, MAX_ATTEMPTS,
    HTTP_TIMEOUT, RETRY_BASE_DELAY, RETRY_MAX_DELAY, ALLOW_PRIVATE_NETWORKS, BREAKER_FAILURES,
    BREAKER_RESET, EXECUTION_RETENTION_DAYS, SECRET_KEYS (to decrypt credentials), and the optional
    SUPERVISOR_TICK, HEARTBEAT_INTERVAL, WORKER_DEAD_AFTER, RECOVER_INTERVAL, RETENTION_INTERVAL (seconds
    between purge runs, all processes).

    `manager_factory(maxsize)` replaces the guarded urllib3 PoolManager (engine/guarded.py: the SSRF guard
    lives in its connections; maxsize is WORKERS), `clock` the UTC clock used for store timestamps,
    `sleep(token, seconds)` the retry backoff wait, `tracing` the app's spans (app/tracing.py)."""
    settings = {**DEFAULTS, **config}
    coerce(settings)  # a plain mapping may hold strings, as the environment gives them
    clock = clock or utcnow
    breakers = HostBreakers(metrics, fail_max=settings["BREAKER_FAILURES"], reset_timeout=settings["BREAKER_RESET"],
                            clock=clock)
    client = HttpClient(policy=AddressPolicy(allow_private=settings["ALLOW_PRIVATE_NETWORKS"]), breakers=breakers,
                        default_timeout=settings["HTTP_TIMEOUT"], pool_size=settings["WORKERS"],
                        manager_factory=manager_factory, tracing=tracing)
    retry = RetryPolicy(max_attempts=max(1, settings["MAX_ATTEMPTS"]), base_delay=settings["RETRY_BASE_DELAY"],
                        max_delay=settings["RETRY_MAX_DELAY"])
    credentials = CredentialResolver(store, SecretBox(settings["SECRET_KEYS"]) if settings.get("SECRET_KEYS") else None)
    runner = Runner(store, metrics, client, owner_id=new_id("wrk"), job_timeout=settings["JOB_TIMEOUT"],
                    retry=retry, credentials=credentials, clock=clock, sleep=sleep or CancelToken.wait,
                    tracing=tracing)
    defaults = SupervisorTiming()
    timing = SupervisorTiming(tick=float(settings.get("SUPERVISOR_TICK", defaults.tick)),
                              heartbeat_every=float(settings.get("HEARTBEAT_INTERVAL", defaults.heartbeat_every)),
                              dead_after=float(settings.get("WORKER_DEAD_AFTER", defaults.dead_after)),
                              recover_every=float(settings.get("RECOVER_INTERVAL", defaults.recover_every)))
    retention = Retention(store, days=settings["EXECUTION_RETENTION_DAYS"], clock=clock,
                          interval=float(settings.get("RETENTION_INTERVAL", 3600.0)))
    return BoundedExecutor(store, metrics, runner, client, workers=settings["WORKERS"],
                           queue_size=settings["QUEUE_SIZE"], timing=timing, clock=clock, retention=retention)
