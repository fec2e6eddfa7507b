"""API keys: 32 random bytes behind a short visible prefix, stored only as a SHA-256 hash.

A fast hash is right here (unlike for passwords): the key has 256 bits of entropy, so there is
nothing to brute-force, and authentication stays cheap on every request."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from app.errors import BadApiKey
from app.models import ApiKey, Principal, User, new_id
from app.store import Store

KEY_PREFIX = "ipk"
_KEY_RE = re.compile(r"^(ipk_[a-z0-9]{8})_([A-Za-z0-9_-]{43})$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(store: Store, user: User, *, now: datetime) -> str:
    """Create a key for `user` and return it in full; only its hash is kept."""
    prefix = f"{KEY_PREFIX}_{secrets.token_hex(4)}"
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    store.add_api_key(ApiKey(id=new_id("key", now), user_id=user.id, tenant_id=user.tenant_id, prefix=prefix,
                             key_hash=hash_key(key), created_at=now))
    return key


def authenticate(store: Store, authorization: str | None) -> Principal:
    """Resolve an `Authorization: Bearer <key>` header to its principal, or raise BadApiKey."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise BadApiKey("missing API key: send Authorization: Bearer <key>", sent=False)
    return authenticate_key(store, key)


def authenticate_key(store: Store, key: str) -> Principal:
    """Resolve an API key (the dashboard's sign-in form sends it bare) to its principal, or raise BadApiKey."""
    key = key.strip()
    match = _KEY_RE.match(key)
    record = store.get_api_key(match.group(1)) if match else None
    # Compare even when the prefix is unknown, so timing does not tell valid prefixes apart.
    expected = record.key_hash if record else hash_key("")
    if not hmac.compare_digest(expected, hash_key(key)) or record is None or record.revoked_at:
        raise BadApiKey("invalid or revoked API key", sent=True)
    return _principal(record)


def principal_for_prefix(store: Store, prefix: str) -> Principal:
    """The principal of a key already proven once (a dashboard session keeps only its prefix, in a signed
    cookie); BadApiKey (401) once the key is revoked or gone, which ends the session."""
    record = store.get_api_key(prefix)
    if record is None or record.revoked_at:
        raise BadApiKey("the API key of this session was revoked", sent=True)
    return _principal(record)


def _principal(record: ApiKey) -> Principal:
    return Principal(tenant_id=record.tenant_id, user_id=record.user_id, key_prefix=record.prefix)
