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
import threading
import time
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


def _listening() -> list[tuple[str, str, int]]:
    """(table, local address, inode) of every listening TCP socket of this network namespace (/proc/net/tcp*)."""
    rows = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/self/net/{table}") as lines:
                next(lines)  # "sl local_address rem_address st ... inode": addresses in hex, st 0A is LISTEN
                rows += [(table, fields[1], int(fields[9])) for fields in map(str.split, lines) if fields[3] == "0A"]
        except OSError:  # no IPv6, or not Linux
            continue
    return rows


class Handoff:
    """A worker's own reuse_port sockets, closed when it stops only once a newer socket listens beside each.

    Closing a worker's socket is what makes the kernel migrate its queue (tcp_migrate_req), so close it as
    soon as the worker stops accepting, rather than after its drain as gunicorn does: the connections queued
    there move at once instead of waiting up to 2 s. But not before another socket listens on the address,
    or the group is empty for an instant and a connection is refused: on a HUP the old workers, when idle,
    stop faster than the new ones bind. "Another" must be newer than every socket this worker saw when it
    started (`known`), or two stopping siblings would each close on seeing the other: the last of them to
    start knew them all, so it waits for a new worker's socket. When none comes (a shutdown, not a reload),
    the sockets are closed at the deadline."""

    POLL = 0.01  # seconds between looks at /proc/net/tcp while waiting for a newer socket

    def __init__(self, sockets: Iterable[socket.socket]) -> None:
        self._sockets = list(sockets)
        self._known = {inode for _, _, inode in _listening()}
        self._thread: threading.Thread | None = None

    def start(self, deadline: float) -> None:
        """Close the sockets in a thread as soon as each is relieved, or at `deadline` (time.monotonic())."""
        self._thread = threading.Thread(target=self._close_when_relieved, args=(deadline,),
                                        name="listener-handoff", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait until every socket is closed (the process must not exit, closing them, before)."""
        if self._thread is not None:
            self._thread.join()

    def _close_when_relieved(self, deadline: float) -> None:
        waiting = {os.fstat(sock.fileno()).st_ino: sock for sock in self._sockets}
        while waiting:
            rows = _listening()
            place = {inode: (table, address) for table, address, inode in rows}
            newer = {(table, address) for table, address, inode in rows if inode not in self._known}
            for inode in [inode for inode in waiting if place.get(inode) in newer or time.monotonic() >= deadline]:
                waiting.pop(inode).close()
            if waiting:
                time.sleep(self.POLL)
