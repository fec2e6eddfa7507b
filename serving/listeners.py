"""How gunicorn's workers listen: on the master's one shared socket, or on a socket each (SO_REUSEPORT).

With a shared socket the workers race for each new connection, and a burst of kept-alive connections
(wrk's 50) can land mostly on one process, which then caps the service near one core (bench/RESULTS.md).
With SO_REUSEPORT the kernel spreads new connections over the workers' sockets by a hash of the
connection's addresses. But a stopping worker's socket (a HUP, a TTOU) stays in the kernel's group
until gunicorn closes it after the worker's drain, and every connection queued on it meanwhile is reset
at that close; unless `net.ipv4.tcp_migrate_req` is 1 (Linux 5.14+, per network namespace), in which
case the kernel moves them, and those still in their handshake, to another socket of the group
(Documentation/networking/ip-sysctl.rst; tests/test_reload.py runs both ways). Hence IPAAS_REUSE_PORT:

- `auto` (the default): SO_REUSEPORT when /proc/sys/net/ipv4/tcp_migrate_req reads 1, except under
  systemd socket activation (LISTEN_FDS: gunicorn would ignore the passed socket and bind its own);
- `true` / `false`: always / never.
"""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Iterable, Mapping

MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def reuse_port(setting: str | None, environ: Mapping[str, str] = os.environ,
               migrate_req: Path = MIGRATE_REQ) -> bool:
    """Decide gunicorn's `reuse_port` from IPAAS_REUSE_PORT's value (None or "" = auto); ValueError if bad."""
    value = (setting or "auto").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value != "auto":
        raise ValueError(f"IPAAS_REUSE_PORT must be auto, true or false, got {setting!r}")
    if environ.get("LISTEN_FDS"):
        return False
    try:
        return migrate_req.read_text().strip() == "1"
    except OSError:  # not Linux, or a kernel before 5.14
        return False


def refuse_taken_addresses(addresses: Iterable[object]) -> None:
    """Raise RuntimeError (gunicorn prints it and exits 1) if something listens on a TCP address (host, port).

    With SO_REUSEPORT a second server started on a taken port by the same user would not fail to bind: its
    workers would join the group and silently take a share of the connections. A socket without
    SO_REUSEPORT cannot bind where anything listens (SO_REUSEADDR only lets it past TIME_WAIT leftovers),
    so binding one, and closing it unused, finds out."""
    for address in addresses:
        if not isinstance(address, tuple):  # a Unix socket path: gunicorn itself refuses a taken one
            continue
        host, port = address[:2]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise RuntimeError(f"{host}:{port} is already in use: is another server running "
                                       f"there? (SO_REUSEPORT would let this one share it silently)") from None
                raise
