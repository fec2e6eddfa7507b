"""Secrets at rest: workflow secrets and credential data are stored as Fernet tokens.

`cryptography`'s MultiFernet over the keys of IPAAS_SECRET_KEY (security/keys.py): the first key
encrypts, every key is tried to decrypt, and `rotate` re-encrypts a token under the first key (what
`flask --app wsgi secrets rotate` applies to every stored secret). A Fernet token is AES-128-CBC plus
HMAC-SHA256 with a timestamp; the plaintext never reaches the database.

Workflow secrets stored before encryption existed were marked `plain:<secret>` by migration 0004;
`upgrade` encrypts exactly those at start and checks that every other stored value decrypts."""
from __future__ import annotations

import json
from typing import Any, Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

LEGACY_PREFIX = "plain:"
KEY_VARIABLE = "IPAAS_SECRET_KEY"


class UndecryptableSecret(Exception):
    """A stored secret does not decrypt under any configured key (the keys changed, or were lost)."""

    def __init__(self) -> None:
        super().__init__(
            f"a stored secret cannot be decrypted with any key of {KEY_VARIABLE}: start with the key it was "
            f"encrypted with (several comma-separated keys may be given, the new one first); nothing was changed")


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError(f"{KEY_VARIABLE} holds no key")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        """A token for `plaintext`, under the first key."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext of a token; UndecryptableSecret if no key opens it."""
        return self._open(self._fernet.decrypt, token).decode("utf-8")

    def encrypt_json(self, value: Any) -> str:
        return self.encrypt(json.dumps(value))

    def decrypt_json(self, token: str) -> Any:
        return json.loads(self.decrypt(token))

    def rotate(self, token: str) -> str:
        """The same secret under the first key; UndecryptableSecret if no key opens it."""
        return self._open(self._fernet.rotate, token).decode("ascii")

    @staticmethod
    def _open(action: Callable[[bytes], bytes], token: str) -> bytes:
        try:
            return action(token.encode("ascii"))
        except (InvalidToken, UnicodeError):  # not a token of these keys (or not a token at all)
            raise UndecryptableSecret() from None

    def upgrade(self, stored: str) -> str:
        """What a stored value becomes at start: a legacy plaintext is encrypted, a token that decrypts
        is kept as it is; UndecryptableSecret otherwise."""
        if stored.startswith(LEGACY_PREFIX):
            return self.encrypt(stored[len(LEGACY_PREFIX):])
        self.decrypt(stored)
        return stored
