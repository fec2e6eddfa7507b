"""What the services need from an execution engine; the thread pool and, later, a Redis-backed
distributed engine implement it, so blueprints and services never change when the engine does."""
from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from app.errors import QueueFull
from app.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStats:
    workers: int
    busy: int
    queue_length: int
    capacity: int
    dropped: int


class Slot(Protocol):
    def submit(self, execution_id: str) -> None:
        """Hand the execution (recorded queued, owned by the engine's owner_id) to the engine."""


class Engine(ABC):
    #: the id under which this process owns executions in the store; None (distributed web processes):
    #: executions are recorded unowned, for any worker process to claim
    owner_id: str | None
    #: whether an execution's outcome is logged by this process, with the id of the request that accepted
    #: it (the thread pool); a distributed web process leaves the outcome to a worker process
    logs_outcome_with_request_id: bool = False

    @abstractmethod
    def slot(self, timeout: float) -> AbstractContextManager[Slot]:
        """Reserve room for one execution, waiting up to `timeout` seconds; raise errors.QueueFull
        (and count a dropped job) if none frees up. Record the execution inside the block, then
        `submit` it; a slot left unsubmitted is given back on exit."""

    @abstractmethod
    def cancel(self, execution_id: str, reason: str) -> bool:
        """Signal the execution's token if this engine holds it (one still waiting for a worker may be
        recorded cancelled at once: see BoundedExecutor.cancel); False if it does not hold it."""

    @abstractmethod
    def wait(self, execution_id: str, timeout: float) -> bool:
        """Block until the execution leaves this engine or `timeout` passes; True if it left."""

    @abstractmethod
    def stats(self) -> EngineStats:
        """Current load, for /metrics and /readyz."""

    def checks(self) -> dict[str, str]:
        """Readiness checks of what the engine depends on besides the store, by name: "ok" or why not."""
        return {}

    @abstractmethod
    def start(self) -> None:
        """Register with the store, start the workers and the supervisor (recovery, heartbeats,
        cross-process cancels)."""

    @abstractmethod
    def shutdown(self, grace: float) -> None:
        """Take no more work, let running executions finish for up to `grace` seconds, cancel the
        rest and hand every unfinished execution back to the store as queued."""


def job_refused(metrics: Metrics, *, full: str, capacity: int, timeout: float) -> QueueFull:
    """Count and log one job refused because the engine's `full` ("queue", "backlog") stayed full for
    `timeout` s; return the error to raise: 503 with a Retry-After of that wait, at least 1 s."""
    metrics.jobs_dropped.inc()
    log.warning(f"job dropped: {full} full", extra={"data": {"capacity": capacity}})
    return QueueFull("the execution queue is full, try again later", retry_after=float(max(1, math.ceil(timeout))))
