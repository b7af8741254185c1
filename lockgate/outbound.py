"""Where lockgate may send requests: the outbound policy for app URLs and QStash destinations.

Checked on the address a connection is actually opened to — after DNS resolution, on every
redirect hop, for hostnames and IP literals alike — through the HTTP client's socket factory,
so a name that resolves to a forbidden address is refused too. In `lockgate start` these are
refused by default: link-local addresses (169.254.0.0/16 with the cloud metadata service,
fe80::/10), unspecified and multicast addresses, and lockgate's own listeners. Private ranges
and other loopback ports stay allowed: self-hosted apps live there. `outbound_allow` (checked
first) and `outbound_deny` take addresses or CIDR ranges. `lockgate dev` applies only the lists.
URLs carrying credentials (`user:pass@host`) are refused at the edge in both modes.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundRefused(OSError):
    """A connection the policy forbids; its message says which rule and how to allow it."""


def parse_networks(values: Iterable[str], setting: str) -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {value!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def credentials_problem(url: str) -> str | None:
    """URLs must not carry a user or password: they would end up in logs and the dashboard."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the URL does not parse"
    if parts.username is not None or parts.password is not None:
        return "URLs with credentials (user:password@host) are refused: send them in a header instead"
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    refuse_special: bool = False  # link-local/metadata, unspecified, multicast (on in `start`)
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    own_ports: frozenset[int] = frozenset()  # lockgate's listeners (refused on local addresses)
    own_hosts: frozenset[str] = field(default_factory=frozenset)

    def problem(self, address: str, port: int) -> str | None:
        """Why a connection to address:port is refused, or None when it is allowed."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow):
            return None
        if any(ip in net for net in self.deny):
            return f"{ip} is in outbound_deny"
        if self.refuse_special:
            if ip.is_link_local:
                return f"{ip} is link-local (cloud metadata lives there); add it to outbound_allow to permit"
            if ip.is_unspecified or ip.is_multicast:
                return f"{ip} is not a destination address"
            if port in self.own_ports and (ip.is_loopback or str(ip) in self.own_hosts):
                return f"{ip}:{port} is lockgate's own listener"
        return None

    def url_problem(self, url: str) -> str | None:
        """Why a URL whose host is an IP literal is refused, known before any connection (so a
        QStash message to the metadata service is refused at publish, not at every delivery).
        Hostnames are checked when they are resolved, at connection time."""
        try:
            parts = urlsplit(url)
            ipaddress.ip_address((parts.hostname or "").split("%", 1)[0])
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        return self.problem(parts.hostname or "", port)

    def socket_factory(self, addr_info: tuple) -> socket.socket:
        """aiohttp's socket factory: runs for each resolved address before connecting to it."""
        family, kind, proto, _, sockaddr = addr_info
        reason = self.problem(sockaddr[0], sockaddr[1])
        if reason:
            raise OutboundRefused(errno.EACCES, f"refused by lockgate's outbound policy: {reason}")
        return socket.socket(family=family, type=kind, proto=proto)


def local_addresses(bind_host: str) -> frozenset[str]:
    """Addresses under which this machine's listeners answer (besides loopback)."""
    hosts = {bind_host}
    try:
        hosts.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return frozenset(hosts)
