"""The memory store's schedule and credential methods (a mixin of MemoryStore, under its lock)."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable

from app.models import Credential, Execution, Page, Workflow
from app.store._rules import check_limit, make_page


class MemoryCredentialsMixin:
    # --- schedules ---------------------------------------------------------------------------------
    def list_scheduled_workflows(self) -> list[Workflow]:
        with self._lock:
            return [self.get_workflow(None, w.id) for w in sorted(self._workflows.values(), key=lambda w: w.id)
                    if w.trigger_type == "schedule" and w.enabled and self._live_workflow(None, w.id)]

    def create_scheduled_execution(self, execution: Execution, *, slot: datetime) -> Execution | None:
        with self._lock:
            workflow = self._live_workflow(None, execution.workflow_id)
            if workflow is None or not workflow.enabled or workflow.trigger_type != "schedule":
                return None
            newest = self._slots.get(execution.workflow_id)
            if newest is not None and newest >= slot:
                return None
            created, _ = self.create_execution(execution)
            self._slots[execution.workflow_id] = slot
            return created

    # --- credentials ---------------------------------------------------------------------------------
    def create_credential(self, credential: Credential) -> Credential:
        with self._lock:
            if credential.tenant_id not in self._tenants:
                raise ValueError(f"unknown tenant {credential.tenant_id!r}")
            if credential.id in self._credentials:
                raise ValueError(f"credential id {credential.id!r} already exists")
            self._credentials[credential.id] = credential
            return credential

    def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        with self._lock:
            found = self._credentials.get(credential_id)
            return found if found is not None and found.tenant_id == tenant_id else None

    def list_credentials(self, tenant_id: str, *, limit: int, cursor: str | None = None) -> Page[Credential]:
        check_limit(limit)
        with self._lock:
            mine = sorted((c for c in self._credentials.values()
                           if c.tenant_id == tenant_id and (cursor is None or c.id < cursor)),
                          key=lambda c: c.id, reverse=True)
            return make_page(mine, limit)

    def update_credential(self, credential: Credential) -> Credential | None:
        with self._lock:
            current = self.get_credential(credential.tenant_id, credential.id)
            if current is None:
                return None
            updated = replace(current, name=credential.name, type=credential.type,
                              encrypted_data=credential.encrypted_data, updated_at=credential.updated_at)
            self._credentials[credential.id] = updated
            return updated

    def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        with self._lock:
            if self.get_credential(tenant_id, credential_id) is None:
                return False
            del self._credentials[credential_id]
            return True

    def rewrite_secrets(self, transform: Callable[[str], str]) -> int:
        with self._lock:
            # Compute every new value first: if transform raises, nothing has changed yet.
            workflows = {w.id: transform(w.secret) for w in self._workflows.values() if w.secret is not None}
            credentials = {c.id: transform(c.encrypted_data) for c in self._credentials.values()}
            changed = 0
            for workflow_id, secret in workflows.items():
                if secret != self._workflows[workflow_id].secret:
                    self._workflows[workflow_id] = replace(self._workflows[workflow_id], secret=secret)
                    changed += 1
            for credential_id, data in credentials.items():
                if data != self._credentials[credential_id].encrypted_data:
                    self._credentials[credential_id] = replace(self._credentials[credential_id], encrypted_data=data)
                    changed += 1
            return changed
