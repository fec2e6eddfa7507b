"""The execution engine: `create_engine` builds the bounded thread pool, or with BROKER_URL the web side
of distributed mode; `create_worker` builds a distributed worker process's engine."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

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
from app.store.health import StoreHealth
from app.tracing import NO_TRACING, Tracing

if TYPE_CHECKING:
    from app.engine.worker import ExecutionWorker

__all__ = ["BoundedExecutor", "CancelToken", "Engine", "EngineStats", "create_engine", "create_worker"]

# A worker process on another machine is known dead 10 s after its last heartbeat (on this machine, as
# soon as its pid is gone), so its executions run again elsewhere well within 30 s.
WORKER_TIMING = SupervisorTiming(heartbeat_every=2.0, dead_after=10.0)


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    settings = {**DEFAULTS, **config}
    coerce(settings)  # a plain mapping may hold strings, as the environment gives them
    return settings


def _runner(store: Store, settings: Mapping[str, Any], metrics: Metrics, *, threads: int,
            manager_factory: Callable[[int], PoolManager] | None, clock: Callable[[], datetime],
            sleep: Sleep | None, tracing: Tracing, health: StoreHealth | None) -> tuple[Runner, HttpClient]:
    breakers = HostBreakers(metrics, fail_max=settings["BREAKER_FAILURES"], reset_timeout=settings["BREAKER_RESET"],
                            clock=clock)
    client = HttpClient(policy=AddressPolicy(allow_private=settings["ALLOW_PRIVATE_NETWORKS"]), breakers=breakers,
                        default_timeout=settings["HTTP_TIMEOUT"], pool_size=threads,
                        manager_factory=manager_factory, tracing=tracing)
    retry = RetryPolicy(max_attempts=max(1, settings["MAX_ATTEMPTS"]), base_delay=settings["RETRY_BASE_DELAY"],
                        max_delay=settings["RETRY_MAX_DELAY"])
    keys = settings.get("SECRET_KEYS")
    credentials = CredentialResolver(store, SecretBox(keys) if keys else None)
    runner = Runner(store, metrics, client, owner_id=new_id("wrk"), job_timeout=settings["JOB_TIMEOUT"],
                    retry=retry, credentials=credentials, clock=clock, sleep=sleep or CancelToken.wait,
                    tracing=tracing, health=health)
    return runner, client


def _timing(settings: Mapping[str, Any], defaults: SupervisorTiming) -> SupervisorTiming:
    return SupervisorTiming(tick=float(settings.get("SUPERVISOR_TICK", defaults.tick)),
                            heartbeat_every=float(settings.get("HEARTBEAT_INTERVAL", defaults.heartbeat_every)),
                            dead_after=float(settings.get("WORKER_DEAD_AFTER", defaults.dead_after)),
                            recover_every=float(settings.get("RECOVER_INTERVAL", defaults.recover_every)))


def create_engine(store: Store, config: Mapping[str, Any], metrics: Metrics, *,
                  manager_factory: Callable[[int], PoolManager] | None = None,
                  clock: Callable[[], datetime] | None = None, sleep: Sleep | None = None,
                  tracing: Tracing = NO_TRACING, health: StoreHealth | None = None) -> Engine:
    """Build (not start) the engine of a web process.

    With BROKER_URL: a DistributedEngine that records and enqueues (QUEUE_SIZE bounds the shared backlog).
    Otherwise a BoundedExecutor from WORKERS, QUEUE_SIZE, JOB_TIMEOUT, MAX_ATTEMPTS, HTTP_TIMEOUT,
    RETRY_BASE_DELAY, RETRY_MAX_DELAY, ALLOW_PRIVATE_NETWORKS, BREAKER_FAILURES, BREAKER_RESET,
    EXECUTION_RETENTION_DAYS, SECRET_KEYS (to decrypt credentials), and the optional SUPERVISOR_TICK,
    HEARTBEAT_INTERVAL, WORKER_DEAD_AFTER,
    RECOVER_INTERVAL, RETENTION_INTERVAL (seconds between purge runs, all processes).

    `manager_factory(maxsize)` replaces the guarded urllib3 PoolManager (engine/guarded.py: the SSRF guard
    lives in its connections; maxsize is WORKERS), `clock` the UTC clock used for store timestamps,
    `sleep(token, seconds)` the retry backoff wait, `tracing` the app's spans (app/tracing.py), `health`
    the process's store-health tracker (a new one if None)."""
    settings = _settings(config)
    if settings["BROKER_URL"]:
        from app.engine.broker import ExecutionQueue
        from app.engine.distributed import DistributedEngine

        return DistributedEngine(store, metrics, ExecutionQueue(settings["BROKER_URL"]),
                                 queue_size=settings["QUEUE_SIZE"])
    clock = clock or utcnow
    runner, client = _runner(store, settings, metrics, threads=settings["WORKERS"], manager_factory=manager_factory,
                             clock=clock, sleep=sleep, tracing=tracing, health=health)
    return BoundedExecutor(store, metrics, runner, client, workers=settings["WORKERS"],
                           queue_size=settings["QUEUE_SIZE"], timing=_timing(settings, SupervisorTiming()),
                           clock=clock, retention=_retention(store, settings, clock))


def _retention(store: Store, settings: Mapping[str, Any], clock: Callable[[], datetime]) -> Retention:
    return Retention(store, days=settings["EXECUTION_RETENTION_DAYS"], clock=clock,
                     interval=float(settings.get("RETENTION_INTERVAL", 3600.0)))


def create_worker(store: Store, config: Mapping[str, Any], metrics: Metrics, *, threads: int | None = None,
                  manager_factory: Callable[[int], PoolManager] | None = None,
                  clock: Callable[[], datetime] | None = None, sleep: Sleep | None = None,
                  tracing: Tracing = NO_TRACING, health: StoreHealth | None = None) -> ExecutionWorker:
    """Build (not start) a distributed worker: `threads` (default WORKERS) executions at once, from the
    queue at BROKER_URL (ValueError without one), swept per REQUEUE_AFTER; the other settings and
    arguments as for create_engine, with WORKER_TIMING's heartbeat defaults."""
    from app.engine.broker import ExecutionQueue
    from app.engine.sweeper import Sweeper
    from app.engine.worker import ExecutionWorker

    settings = _settings(config)
    if not settings["BROKER_URL"]:
        raise ValueError("a worker needs IPAAS_BROKER_URL=redis://HOST[:PORT][/DB]")
    threads = threads or settings["WORKERS"]
    clock = clock or utcnow
    runner, client = _runner(store, settings, metrics, threads=threads, manager_factory=manager_factory,
                             clock=clock, sleep=sleep, tracing=tracing, health=health)
    queue = ExecutionQueue(settings["BROKER_URL"])
    timing = _timing(settings, WORKER_TIMING)
    sweeper = Sweeper(store, queue, holder=runner.owner_id, requeue_after=settings["REQUEUE_AFTER"],
                      lease_ttl=3 * timing.recover_every, clock=clock)
    return ExecutionWorker(store, metrics, runner, client, queue, threads=threads, timing=timing, sweeper=sweeper,
                           clock=clock, retention=_retention(store, settings, clock))
