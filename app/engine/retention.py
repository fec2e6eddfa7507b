"""Delete executions older than IPAAS_EXECUTION_RETENTION_DAYS, a small batch per supervisor round.

One process at a time: a purge run starts only in the process that takes the one token of the store's
rate bucket `retention:purge` (burst 1, refilled once per `interval` seconds). The bucket lives in the
store (rate_buckets), so every gunicorn process and machine sharing it sees the same bucket and at most
one run starts per interval, with no table or lock of its own. A run that outlived the interval would
merely overlap the next (deletes of the same rows are harmless); at BATCH rows per 0.25 s round a run
deletes about 7 million rows an hour, so it does not.

Within a run, each supervisor round deletes at most BATCH rows in one short transaction, so the
store's write lock is never held for long and webhooks keep being recorded in between."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from app.models import utcnow
from app.store.base import Store

log = logging.getLogger(__name__)

BATCH = 500  # executions deleted per transaction
BUCKET = "retention:purge"
CHECK_EVERY = timedelta(minutes=1)  # how often an idle process asks for the token


class Retention:
    """Driven by the engine's supervisor: call `tick()` every round."""

    def __init__(self, store: Store, *, days: float, interval: float = 3600.0, batch: int = BATCH,
                 clock: Callable[[], datetime] = utcnow):
        self._store = store
        self._days = days
        self._interval = interval
        self._batch = batch
        self._clock = clock
        self._next_check: datetime | None = None
        self._before: datetime | None = None  # the cutoff of the run under way, if any
        self._removed = 0

    @property
    def running(self) -> bool:
        return self._before is not None

    def tick(self) -> int:
        """Delete one batch if a run is under way or may start now; return how many were deleted."""
        if self._days <= 0:  # 0 keeps everything
            return 0
        if self._before is None and not self._start():
            return 0
        removed = self._store.purge_executions(before=self._before, limit=self._batch)
        self._removed += removed
        if removed < self._batch:
            level = logging.INFO if self._removed else logging.DEBUG
            log.log(level, "old executions purged", extra={"data": {
                "count": self._removed, "retention_days": self._days, "before": self._before.isoformat()}})
            self._before, self._removed = None, 0
        return removed

    def _start(self) -> bool:
        now = self._clock()
        if self._next_check is not None and now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY
        taken, _ = self._store.take_tokens(BUCKET, want=1, rate=1.0 / self._interval, burst=1.0, now=now)
        if taken:
            self._before = now - timedelta(days=self._days)
        return bool(taken)
