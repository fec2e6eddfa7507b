"""A private network namespace for a test: its own loopback and its own `net.*` sysctls, so a test can set
one (say net.ipv4.tcp_migrate_req) without touching the machine's, nor the tests running beside it.

    with private_network({"net/ipv4/tcp_migrate_req": "1"}):
        server = GunicornServer(...).start()   # gunicorn, the receiver and the clients all live in it

Network namespaces belong to threads (Linux `unshare(2)`): the calling thread moves into the new one, and so
do the threads it starts and the processes it spawns meanwhile; other threads keep the machine's. At exit
the thread goes back (`setns(2)`) and the namespace goes with its last socket. Needs root (CAP_SYS_ADMIN):
`NamespaceUnavailable` otherwise.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
from typing import Iterator, Mapping

CLONE_NEWNET = 0x40000000  # <sched.h>
SIOCSIFFLAGS = 0x8914  # <linux/sockios.h>
IFF_UP, IFF_LOOPBACK = 0x1, 0x8  # <net/if.h>

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceUnavailable(OSError):
    """This process may not make a network namespace (not root, or a sandbox forbids it)."""


def _check(result: int, call: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise NamespaceUnavailable(errno, f"{call}: {os.strerror(errno)}")


def _loopback_up() -> None:
    """`ip link set lo up`: a new namespace's loopback is down, so 127.0.0.1 would be unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK))


def set_sysctl(name: str, value: str) -> None:
    """Set /proc/sys/`name` ("net/ipv4/tcp_migrate_req"): a `net/` one in the calling thread's namespace."""
    with open(f"/proc/sys/{name}", "w") as setting:  # /proc/sys/net shows the opening thread's namespace
        setting.write(value)


@contextlib.contextmanager
def private_network(sysctls: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run the body in a new network namespace, loopback up, `sysctls` ({"net/ipv4/x": "1"}) set in it."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _loopback_up()
            for name, value in (sysctls or {}).items():
                set_sysctl(name, value)
            yield
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back to the test run's network namespace")
    finally:
        os.close(home)
