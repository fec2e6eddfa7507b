"""serving/listeners.py: when gunicorn's workers get a socket each, and refusing a port that is taken."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from serving.listeners import refuse_taken_addresses, reuse_port


@pytest.fixture
def migrate_req(tmp_path: Path):
    """A stand-in for /proc/sys/net/ipv4/tcp_migrate_req holding `value` (None: the file is missing)."""
    def make(value: str | None) -> Path:
        path = tmp_path / "tcp_migrate_req"
        if value is not None:
            path.write_text(f"{value}\n")
        return path
    return make


@pytest.mark.parametrize("setting, sysctl, environ, expected", [
    (None, "1", {}, True),  # auto: queued connections migrate on a reload
    ("", "1", {}, True),
    ("auto", "0", {}, False),  # a reload would reset them
    ("auto", None, {}, False),  # a kernel before 5.14
    ("AUTO", "1", {"LISTEN_FDS": "1"}, False),  # systemd passed the socket: gunicorn would ignore it
    ("true", "0", {}, True),
    ("yes", None, {}, True),
    ("false", "1", {}, False),
    ("0", "1", {}, False),
])
def test_reuse_port_follows_the_setting_and_the_sysctl(migrate_req, setting, sysctl, environ, expected):
    assert reuse_port(setting, environ, migrate_req(sysctl)) is expected


@pytest.mark.parametrize("setting", ["sometimes", "2", "auto-ish"])
def test_reuse_port_names_a_bad_setting(migrate_req, setting):
    with pytest.raises(ValueError, match=f"IPAAS_REUSE_PORT must be auto, true or false, got '{setting}'"):
        reuse_port(setting, {}, migrate_req("1"))


def test_refuse_taken_addresses_refuses_a_port_another_socket_listens_on():
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a reuse_port server's worker
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} is already in use"):
            refuse_taken_addresses([("127.0.0.1", port)])


def test_refuse_taken_addresses_lets_a_free_port_and_a_unix_path_pass(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    refuse_taken_addresses([("127.0.0.1", port), str(tmp_path / "gunicorn.sock")])
