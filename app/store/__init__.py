"""Storage backends behind one interface; `create_store` picks one from IPAAS_DATABASE_URL."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

from app.store.base import DuplicateError, Store, StoreError, WorkerRecord
from app.store.memory import MemoryStore
from app.store.postgres import PostgresStore
from app.store.sqlite import SqliteStore

__all__ = ["DuplicateError", "MemoryStore", "PostgresStore", "SqliteStore", "Store", "StoreError", "WorkerRecord",
           "create_store"]

SQLITE_PREFIX = "sqlite:///"


def create_store(url: str, *, pool_size: int = 10) -> Store:
    """Return the backend for `url`: sqlite:///PATH (relative to the current directory), memory://, or
    postgresql://USER[:PASS]@HOST[:PORT]/DB (also postgres://) with up to `pool_size` connections per process."""
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX):]
        if not path or path == ":memory:":
            raise ValueError("a sqlite:/// URL needs a file path (use memory:// for an in-memory store)")
        return SqliteStore(os.path.abspath(path))
    # Only the scheme is ever echoed: the rest of a URL may hold a password.
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url, pool_size=pool_size)
    raise ValueError(f"unsupported database URL scheme {scheme!r}: expected sqlite:///PATH, memory:// or "
                     "postgresql://...")
