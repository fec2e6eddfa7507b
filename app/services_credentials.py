"""Use cases of credentials and of the secrets at rest (a mixin of Services: it uses `store` and `box`)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from app import connectors, credentials
from app.errors import Conflict, NotFound, ValidationFailed
from app.models import Credential, Page, Principal, Workflow, new_id, utcnow
from app.validation import require_object

FIELDS = ("name", "type", "data")
NAME_MAX = 200


def _fields(body: Any) -> dict[str, Any]:
    body = require_object(body)
    unknown = sorted(set(body) - set(FIELDS) - {"id", "created_at", "updated_at"})
    if unknown:
        raise ValidationFailed(f"unknown field {unknown[0]!r}", field=unknown[0])
    for key in FIELDS:
        if key not in body:
            raise ValidationFailed(f"{key} is required", field=key)
    name = body["name"].strip() if isinstance(body["name"], str) else None
    if not name or len(name) > NAME_MAX:
        raise ValidationFailed(f"name must be a string of 1 to {NAME_MAX} characters", field="name")
    if not isinstance(body["type"], str) or body["type"] not in credentials.TYPES:
        raise ValidationFailed(f"type must be one of {', '.join(credentials.TYPES)}, got {body['type']!r}",
                               field="type")
    return {"name": name, "type": body["type"], "data": credentials.check_data(body["type"], body["data"])}


class CredentialsMixin:
    def create_credential(self, principal: Principal, body: Any) -> Credential:
        fields, now = _fields(body), utcnow()
        credential = Credential(id=new_id("cr", now), tenant_id=principal.tenant_id, name=fields["name"],
                                type=fields["type"], encrypted_data=self.box.encrypt_json(fields["data"]),
                                created_at=now, updated_at=now)
        return self.store.create_credential(credential)

    def get_credential(self, principal: Principal, credential_id: str) -> Credential:
        credential = self.store.get_credential(principal.tenant_id, credential_id)
        if credential is None:
            raise NotFound(f"no credential {credential_id!r}")
        return credential

    def list_credentials(self, principal: Principal, *, limit: int, cursor: str | None) -> Page[Credential]:
        return self.store.list_credentials(principal.tenant_id, limit=limit, cursor=cursor)

    def update_credential(self, principal: Principal, credential_id: str, body: Any) -> Credential:
        """PUT: name, type and data are all replaced (data is write-only, so it is always sent)."""
        fields = _fields(body)
        current = self.get_credential(principal, credential_id)
        if fields["type"] != current.type:
            users = self._workflows_using(principal.tenant_id, credential_id)
            if users:
                raise Conflict(f"credential {credential_id!r} is used by workflow {users[0].id!r} "
                               f"({users[0].name}): its type cannot change", field="type")
        updated = replace(current, name=fields["name"], type=fields["type"], updated_at=utcnow(),
                          encrypted_data=self.box.encrypt_json(fields["data"]))
        stored = self.store.update_credential(updated)
        if stored is None:
            raise NotFound(f"no credential {credential_id!r}")
        return stored

    def delete_credential(self, principal: Principal, credential_id: str) -> None:
        self.get_credential(principal, credential_id)
        users = self._workflows_using(principal.tenant_id, credential_id)
        if users:
            raise Conflict(f"credential {credential_id!r} is used by workflow {users[0].id!r} ({users[0].name})")
        if not self.store.delete_credential(principal.tenant_id, credential_id):
            raise NotFound(f"no credential {credential_id!r}")

    def workflows_using_credential(self, principal: Principal, credential_id: str) -> list[Workflow]:
        """The tenant's workflows with a step that uses the credential (they block its deletion)."""
        return self._workflows_using(principal.tenant_id, credential_id)

    def _workflows_using(self, tenant_id: str, credential_id: str) -> list[Workflow]:
        using, cursor = [], None
        while True:
            page = self.store.list_workflows(tenant_id, limit=200, cursor=cursor)
            using += [w for w in page.items if any(step.credential_id == credential_id for step in w.steps)]
            if page.next_cursor is None:
                return using
            cursor = page.next_cursor

    def check_credentials(self, workflow: Workflow) -> None:
        """Each step's credential exists in the workflow's tenant and suits its action; 422 naming
        `steps[i].credential_id`. Another tenant's credential is refused exactly like an unknown one."""
        for index, step in enumerate(workflow.steps):
            field = f"steps[{index}].credential_id"
            connector = connectors.get(step.action_type)
            wanted = " or ".join(connector.credential_types)
            if step.credential_id is None:
                if connector.credential_required:
                    raise ValidationFailed(f"{step.action_type} needs a {field} of type {wanted}", field=field)
                continue
            if not connector.credential_types:
                raise ValidationFailed(f"{field}: {step.action_type} takes no credential", field=field)
            credential = self.store.get_credential(workflow.tenant_id, step.credential_id)
            if credential is None:
                raise ValidationFailed(f"{field}: no credential {step.credential_id!r}", field=field)
            if credential.type not in connector.credential_types:
                raise ValidationFailed(f"{field}: {step.action_type} needs a credential of type {wanted}, "
                                       f"{step.credential_id!r} is {credential.type}", field=field)

    def reveal_secret(self, workflow: Workflow) -> str | None:
        """The plaintext of a workflow's signing secret, for checking a webhook's signature."""
        return None if workflow.secret is None else self.box.decrypt(workflow.secret)
