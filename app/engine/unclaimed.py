"""The executions a runner started without a claim (engine/runner.py), so that one still running a
supervisor tick later is recorded `running`: the API and dashboard show it, and short ones cost no write."""
from __future__ import annotations

import threading
from datetime import datetime

from app.store.base import Store, StoreError
from app.store.health import StoreHealth


class UnclaimedRuns:
    """Thread-safe; `record_running` is called every supervisor tick (through Runner.flush_pending)."""

    def __init__(self, store: Store, owner_id: str, health: StoreHealth):
        self._store = store
        self._owner_id = owner_id
        self._health = health
        self._lock = threading.Lock()
        self._started: dict[str, datetime] = {}  # started since the previous tick
        self._due: dict[str, datetime] = {}  # still running a tick later: to record

    def started(self, execution_id: str, at: datetime) -> None:
        with self._lock:
            self._started[execution_id] = at

    def ended(self, execution_id: str) -> None:
        with self._lock:
            self._started.pop(execution_id, None)
            self._due.pop(execution_id, None)

    def record_running(self) -> None:
        """Record `running` (one transaction) for those started before the previous call that have not
        ended; after a store error they are tried again at the next call (the outcome, should it come
        first, settles them: mark_running changes only queued rows)."""
        with self._lock:
            due = dict(self._due)
            self._due.update(self._started)
            self._started.clear()
        if not due:
            return
        try:
            self._store.mark_running(self._owner_id, due)
        except StoreError as error:
            self._health.failed("mark running", error)
            return
        self._health.written()
        with self._lock:
            for execution_id in due:
                self._due.pop(execution_id, None)
