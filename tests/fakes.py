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
