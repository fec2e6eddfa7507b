"""The PostgreSQL store's schedule, credential and secrets-rewrite methods (a mixin of PostgresStore).

A slot is claimed under a row lock on its workflow (`SELECT ... FOR UPDATE`), so two processes that fire
slots of one workflow at once are serialized: the second sees the first's slot and records nothing."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from app.models import Credential, Execution, Page, Workflow
from app.store import _pg_rows as rows
from app.store._pg_rows import ts
from app.store._rules import make_page

# (table, key column, secret column): every place a secret is stored.
SECRET_COLUMNS = (("workflows", "id", "secret"), ("credentials", "id", "encrypted_data"))


class PostgresCredentialsMixin:
    # --- schedules ---------------------------------------------------------------------------------
    def list_scheduled_workflows(self) -> list[Workflow]:
        found = self._db.query("SELECT * FROM workflows WHERE trigger_type = 'schedule' AND enabled"
                               " AND deleted_at IS NULL ORDER BY id")
        return [rows.workflow_from(row) for row in found]

    def create_scheduled_execution(self, execution: Execution, *, slot: datetime) -> Execution | None:
        values = rows.execution_values(execution)
        params = {"workflow_id": execution.workflow_id, "slot": ts(slot), "execution_id": execution.id}
        with self._db.transaction() as conn:
            live = conn.execute("SELECT 1 FROM workflows WHERE id = %(workflow_id)s AND deleted_at IS NULL"
                                " AND enabled AND trigger_type = 'schedule' FOR UPDATE", params).fetchone()
            if live is None:
                return None
            later = conn.execute("SELECT 1 FROM schedule_slots WHERE workflow_id = %(workflow_id)s"
                                 " AND slot >= %(slot)s", params).fetchone()
            if later is not None:
                return None
            conn.execute("DELETE FROM schedule_slots WHERE workflow_id = %(workflow_id)s AND slot < %(slot)s", params)
            conn.execute("INSERT INTO schedule_slots (workflow_id, slot, execution_id)"
                         " VALUES (%(workflow_id)s, %(slot)s, %(execution_id)s)", params)
            conn.execute(rows.INSERT_EXECUTION, values)
        return execution

    # --- credentials ---------------------------------------------------------------------------------
    def create_credential(self, credential: Credential) -> Credential:
        c = credential
        found = self._db.query(
            "INSERT INTO credentials (id, tenant_id, name, type, encrypted_data, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (c.id, c.tenant_id, c.name, c.type, c.encrypted_data, ts(c.created_at), ts(c.updated_at)))
        return rows.credential_from(found[0])

    def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        return self._get(rows.credential_from, "SELECT * FROM credentials WHERE id = %s AND tenant_id = %s",
                         (credential_id, tenant_id))

    def list_credentials(self, tenant_id: str, *, limit: int, cursor: str | None = None) -> Page[Credential]:
        found = self._newest_first("credentials", ["tenant_id = %(tenant_id)s"], {"tenant_id": tenant_id}, limit,
                                   cursor)
        return make_page([rows.credential_from(row) for row in found], limit)

    def update_credential(self, credential: Credential) -> Credential | None:
        c = credential
        return self._get(rows.credential_from,
                         "UPDATE credentials SET name = %s, type = %s, encrypted_data = %s, updated_at = %s"
                         " WHERE id = %s AND tenant_id = %s RETURNING *",
                         (c.name, c.type, c.encrypted_data, ts(c.updated_at), c.id, c.tenant_id))

    def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        with self._db.transaction() as conn:
            return conn.execute("DELETE FROM credentials WHERE id = %s AND tenant_id = %s",
                                (credential_id, tenant_id)).rowcount == 1

    # --- secrets at rest --------------------------------------------------------------------------------
    def rewrite_secrets(self, transform: Callable[[str], str]) -> int:
        """As Store.rewrite_secrets: the rows are locked (FOR UPDATE) while the transaction runs."""
        changed = 0
        with self._db.transaction() as conn:
            for table, key, column in SECRET_COLUMNS:
                found = conn.execute(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL"
                                     f" FOR UPDATE").fetchall()
                for row in found:
                    new = transform(row[column])
                    if new != row[column]:
                        conn.execute(f"UPDATE {table} SET {column} = %s WHERE {key} = %s", (new, row[key]))
                        changed += 1
        return changed
