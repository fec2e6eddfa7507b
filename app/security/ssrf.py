"""SSRF guard: actions may reach only public addresses unless private networks are allowed.

The guard judges IP addresses, never host names. The HTTP client (engine/http.py) resolves a host
once with `resolve_and_check`, which refuses the host if ANY of its addresses is refused, and then
connects to one of those checked addresses, so DNS rebinding cannot swap the address between the
check and the connect."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[int, int, int, tuple]  # family, type, proto, sockaddr: what socket.socket/connect take

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT; not "private" in Python < 3.12
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class BlockedDestination(Exception):
    """An action tried to reach an address that the guard refuses."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64, compatible), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or int(ip) >> 32 == 0:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _reason(ip: IPAddress) -> str | None:
    """Say why `ip` may not be reached, or None if it is a public address."""
    if ip in _METADATA:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_loopback or ip.is_unspecified):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = _reason(inner)
            return f"{why} (embeds {inner})" if why else None
    flags = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("shared (carrier-grade NAT)", ip in _SHARED),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, hit in flags if hit), None)


def check_address(ip: IPAddress) -> None:
    """Raise BlockedDestination unless `ip` is a public unicast address."""
    why = _reason(ip)
    if why is not None:
        raise BlockedDestination(
            f"destination address {ip} is {why}: actions may only reach public addresses "
            "(IPAAS_ALLOW_PRIVATE_NETWORKS allows private ones)"
        )


@dataclass(frozen=True)
class AddressPolicy:
    """Which destinations an HTTP client may connect to.

    `exceptions` lets through exact (address, port) pairs (port None: any port) in spite of the
    guard: an on-premises allowlist, or a test server on 127.0.0.1 whose redirects must still be
    judged."""

    allow_private: bool = False
    exceptions: frozenset[tuple[IPAddress, int | None]] = frozenset()

    def check(self, ip: IPAddress, port: int) -> None:
        """Raise BlockedDestination unless this policy lets `ip`:`port` be reached."""
        if self.allow_private or (ip, port) in self.exceptions or (ip, None) in self.exceptions:
            return
        check_address(ip)


STRICT = AddressPolicy()


def parse_ip_literal(host: str) -> IPAddress | None:
    """Return the address a literal host stands for, in every form inet_aton accepts (2130706433,
    0x7f000001, 0177.0.0.1, 127.1) or IPv6 (with or without brackets); None for a host name."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def resolve_and_check(host: str, port: int, policy: AddressPolicy = STRICT) -> list[AddrInfo]:
    """Resolve `host` and return its addresses, all checked; raise BlockedDestination if any is
    refused and socket.gaierror if the name does not resolve."""
    literal = parse_ip_literal(host)
    if literal is not None:
        family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
        infos = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, (str(literal), port))]
    else:
        infos = [(family, kind, proto, sockaddr) for family, kind, proto, _, sockaddr
                 in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    for _, _, _, sockaddr in infos:
        policy.check(ipaddress.ip_address(sockaddr[0]), port)
    return list(dict.fromkeys(infos))
