"""serving/listeners.py: when gunicorn's workers get a socket each, and refusing a port that is taken."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from serving.listeners import Handoff, refuse_taken_addresses, reuse_port


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


@pytest.fixture
def reuse_port_listener() -> Iterator[Callable[[int], socket.socket]]:
    """Open listening SO_REUSEPORT sockets on 127.0.0.1 (port 0: a free one), as reuse_port workers do."""
    opened: list[socket.socket] = []

    def listen(port: int = 0) -> socket.socket:
        sock = socket.socket()
        opened.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock

    yield listen
    for sock in opened:
        sock.close()


def test_handoff_closes_a_stopping_workers_socket_once_a_new_one_listens(reuse_port_listener):
    old = reuse_port_listener()
    handoff = Handoff([old])
    handoff.start(deadline=time.monotonic() + 60)

    reuse_port_listener(old.getsockname()[1])  # a new worker's
    handoff.join()

    assert old.fileno() == -1


def test_handoff_keeps_the_last_started_sibling_open_until_the_deadline(reuse_port_listener):
    # Two old workers stopping together (a shutdown): the first is relieved by the second, which knew the
    # first when it started and so waits for a newer socket, until the deadline: the port never goes silent.
    first = reuse_port_listener()
    first_handoff = Handoff([first])
    second = reuse_port_listener(first.getsockname()[1])
    second_handoff = Handoff([second])
    deadline = time.monotonic() + 1.0

    first_handoff.start(deadline)
    second_handoff.start(deadline)
    first_handoff.join()
    assert time.monotonic() < deadline and second.fileno() != -1
    second_handoff.join()

    assert time.monotonic() >= deadline
    assert first.fileno() == second.fileno() == -1
