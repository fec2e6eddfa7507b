"""SecretBox: Fernet tokens under the first key, decrypted by any, legacy plaintext upgraded once."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from app.security.crypto import SecretBox, UndecryptableSecret

OLD, NEW = Fernet.generate_key(), Fernet.generate_key()


def test_tokens_open_with_any_key_and_rotate_to_the_first():
    token = SecretBox([OLD]).encrypt("s3cret")
    assert "s3cret" not in token
    both = SecretBox([NEW, OLD])
    assert both.decrypt(token) == "s3cret"
    rotated = both.rotate(token)
    assert SecretBox([NEW]).decrypt(rotated) == "s3cret"
    with pytest.raises(UndecryptableSecret, match="IPAAS_SECRET_KEY"):
        SecretBox([OLD]).decrypt(rotated)


@pytest.mark.parametrize("stored", ["gAAAAAB-not-really", "plain", "", "ü"])
def test_what_no_key_opens_is_refused(stored):
    with pytest.raises(UndecryptableSecret):
        SecretBox([NEW]).upgrade(stored)


def test_upgrade_encrypts_marked_plaintext_and_keeps_tokens():
    box = SecretBox([NEW])
    upgraded = box.upgrade("plain:hunter2")
    assert box.decrypt(upgraded) == "hunter2"
    assert box.upgrade(upgraded) == upgraded
    assert box.decrypt_json(box.encrypt_json({"password": "pw"})) == {"password": "pw"}
