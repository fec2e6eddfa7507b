"""IPAAS_SECRET_KEY parsing and the generated key file."""
from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet

from app.security.keys import load_secret_keys


def test_keys_from_the_variable_keep_their_order(tmp_path):
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    assert load_secret_keys(f" {first} , {second} ", str(tmp_path)) == [first.encode(), second.encode()]
    assert not (tmp_path / "secret.key").exists()


def test_keys_generated_once_into_the_instance_folder_with_mode_0600(tmp_path):
    instance = tmp_path / "instance"
    keys = load_secret_keys(None, str(instance))
    path = instance / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret_keys("", str(instance)) == keys  # read back, not generated again
    Fernet(keys[0])


@pytest.mark.parametrize("value", ["not-a-key", "abc,", Fernet.generate_key().decode() + ",short"])
def test_keys_malformed_name_the_variable_and_never_echo_the_value(tmp_path, value):
    with pytest.raises(ValueError) as error:
        load_secret_keys(value, str(tmp_path))
    assert "IPAAS_SECRET_KEY" in str(error.value)
    assert "short" not in str(error.value) and "not-a-key" not in str(error.value)
