"""Single-purpose test doubles."""
from __future__ import annotations

from typing import Any

from app.store import Store, StoreError


class FailingStore:
    """Wraps a store; `method` fails as a locked or unreachable database would, the first `failures`
    times (None: every time). Everything else goes to the real store."""

    def __init__(self, store: Store, method: str, failures: int | None = 1, message: str = "database is locked"):
        self._store, self._method, self._message = store, method, message
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if name != self._method:
            return real

        def failing(*args: Any, **kwargs: Any) -> Any:
            if self.failures is None or self.failures > 0:
                if self.failures is not None:
                    self.failures -= 1
                raise StoreError(self._message)
            return real(*args, **kwargs)
        return failing


class RecordingQueue:
    """Stands in for engine/broker.ExecutionQueue: records what is sent and published; `down` makes every
    call fail as a lost Redis would; `lease_holder` is who holds every lease (None: free)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.cancels: list[tuple[str, str]] = []
        self.down = False
        self.lease_holder: str | None = None

    def _check(self) -> None:
        if self.down:
            import redis

            raise redis.ConnectionError("Connection refused")

    def send(self, execution_id: str) -> None:
        self._check()
        self.sent.append(execution_id)

    def ping(self) -> None:
        self._check()

    def publish_cancel(self, execution_id: str, by: str) -> None:
        self._check()
        self.cancels.append((execution_id, by))

    def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        self._check()
        if self.lease_holder is None:
            self.lease_holder = holder
        return self.lease_holder == holder

    def close(self) -> None:
        pass
