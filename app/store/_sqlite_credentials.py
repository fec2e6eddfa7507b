"""The SQLite store's credential methods and the secrets rewrite (a mixin of SqliteStore)."""
from __future__ import annotations

import logging
import sqlite3
from typing import Callable

from app.models import Credential, Page
from app.store import _sqlite_rows as rows
from app.store._rules import make_page
from app.store._sqlite_db import one
from app.store._sqlite_rows import to_ts

log = logging.getLogger(__name__)

# (table, key column, secret column): every place a secret is stored.
SECRET_COLUMNS = (("workflows", "id", "secret"), ("credentials", "id", "encrypted_data"))


class SqliteCredentialsMixin:
    def create_credential(self, credential: Credential) -> Credential:
        c = credential

        def write(conn: sqlite3.Connection) -> Credential:
            row = one(conn, "INSERT INTO credentials (id, tenant_id, name, type, encrypted_data, created_at,"
                            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                      (c.id, c.tenant_id, c.name, c.type, c.encrypted_data, to_ts(c.created_at),
                       to_ts(c.updated_at)))
            return rows.credential_from(row)

        return self._write(write)

    def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        return self._get(rows.credential_from, "SELECT * FROM credentials WHERE id = ? AND tenant_id = ?",
                         (credential_id, tenant_id))

    def list_credentials(self, tenant_id: str, *, limit: int, cursor: str | None = None) -> Page[Credential]:
        found = self._newest_first("credentials", ["tenant_id = ?"], [tenant_id], limit, cursor)
        return make_page([rows.credential_from(row) for row in found], limit)

    def update_credential(self, credential: Credential) -> Credential | None:
        c = credential

        def write(conn: sqlite3.Connection) -> Credential | None:
            row = one(conn, "UPDATE credentials SET name = ?, type = ?, encrypted_data = ?, updated_at = ?"
                            " WHERE id = ? AND tenant_id = ? RETURNING *",
                      (c.name, c.type, c.encrypted_data, to_ts(c.updated_at), c.id, c.tenant_id))
            return rows.credential_from(row) if row else None

        return self._write(write)

    def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            sql = "DELETE FROM credentials WHERE id = ? AND tenant_id = ?"
            return conn.execute(sql, (credential_id, tenant_id)).rowcount == 1

        return self._write(write)

    def rewrite_secrets(self, transform: Callable[[str], str]) -> int:
        """As Store.rewrite_secrets; the replaced values are overwritten on disk (secure_delete, then a
        checkpoint that empties the WAL), so a plaintext secret that is encrypted leaves no copy behind."""

        def write(conn: sqlite3.Connection) -> int:
            changed = 0
            conn.execute("PRAGMA secure_delete = ON")
            try:
                for table, key, column in SECRET_COLUMNS:
                    found = conn.execute(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL").fetchall()
                    for row_key, value in found:
                        new = transform(value)
                        if new != value:
                            conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (new, row_key))
                            changed += 1
            finally:
                conn.execute("PRAGMA secure_delete = OFF")
            return changed

        changed = self._write(write)
        if changed:
            self.checkpoint()
        return changed

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it (best effort: readers may hold it)."""
        busy, _, _ = self._db.read("PRAGMA wal_checkpoint(TRUNCATE)")[0]
        if busy:
            log.warning("the WAL could not be checkpointed now: readers hold it; SQLite will later")
