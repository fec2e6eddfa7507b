"""Credentials at run time: load a step's credential from the store, decrypt it for the connector, and
scrub its secret values from whatever the execution records or logs (results, errors, the output later
steps see)."""
from __future__ import annotations

from typing import Any, TypeVar

from app import credentials
from app.connectors.base import Credential
from app.security.crypto import SecretBox, UndecryptableSecret
from app.security.redact import REDACTED
from app.store.base import Store

T = TypeVar("T")


class MissingCredential(Exception):
    """The workflow names a credential that is gone or cannot be decrypted: the execution fails."""


class CredentialResolver:
    def __init__(self, store: Store, box: SecretBox | None):
        """`box` None (an engine built without SECRET_KEYS): executions that name a credential fail."""
        self._store = store
        self._box = box

    def resolve(self, tenant_id: str, credential_id: str | None) -> Credential | None:
        """The decrypted credential (looked up within the execution's tenant), or None if none is named."""
        if credential_id is None:
            return None
        stored = self._store.get_credential(tenant_id, credential_id)
        if self._box is None:
            raise MissingCredential(f"credential {credential_id!r}: this engine has no secret keys to decrypt it")
        if stored is None:
            raise MissingCredential(f"credential {credential_id!r} was deleted")
        try:
            return Credential(type=stored.type, data=self._box.decrypt_json(stored.encrypted_data))
        except UndecryptableSecret as exc:
            raise MissingCredential(f"credential {credential_id!r}: {exc}") from None


def scrub(value: T, credential: Credential | None) -> T:
    """`value` (a text, or a JSON value: every string in it) with each secret value of the credential
    replaced by [REDACTED]."""
    if credential is None:
        return value
    secrets = [secret for secret in credentials.secret_values(credential.type, dict(credential.data)) if secret]
    return _scrubbed(value, secrets)


def _scrubbed(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: _scrubbed(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, secrets) for item in value]
    return value
