"""The SQLite store's schedule methods (a mixin of SqliteStore): the scheduler's workflows and slot claims."""
from __future__ import annotations

import sqlite3
from datetime import datetime

from app.models import Execution, Workflow
from app.store import _sqlite_rows as rows
from app.store._sqlite_db import one
from app.store._sqlite_rows import to_ts

# The claim: the workflow still runs on a schedule, and neither this slot nor a later one was claimed
# (a process whose clock lags must not fire a slot older than one already fired).
_CLAIM = """
    INSERT INTO schedule_slots (workflow_id, slot, execution_id)
    SELECT :workflow_id, :slot, :execution_id
    WHERE EXISTS (SELECT 1 FROM workflows WHERE id = :workflow_id AND deleted_at IS NULL AND enabled = 1
                  AND trigger_type = 'schedule')
      AND NOT EXISTS (SELECT 1 FROM schedule_slots WHERE workflow_id = :workflow_id AND slot >= :slot)
    RETURNING slot"""


class SqliteSchedulesMixin:
    def list_scheduled_workflows(self) -> list[Workflow]:
        found = self._db.read("SELECT * FROM workflows WHERE trigger_type = 'schedule' AND enabled = 1"
                              " AND deleted_at IS NULL ORDER BY id")
        return [rows.workflow_from(row) for row in found]

    def create_scheduled_execution(self, execution: Execution, *, slot: datetime) -> Execution | None:
        values = rows.execution_values(execution)
        params = {"workflow_id": execution.workflow_id, "slot": to_ts(slot), "execution_id": execution.id}

        def write(conn: sqlite3.Connection) -> bool:
            if one(conn, _CLAIM, params) is None:
                return False
            # The newest row is the high-water mark; older ones can never matter again.
            conn.execute("DELETE FROM schedule_slots WHERE workflow_id = :workflow_id AND slot < :slot", params)
            conn.execute(rows.INSERT_EXECUTION, values)
            return True

        return execution if self._write(write) else None
