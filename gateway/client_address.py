"""The client's address behind trusted proxies (``server.trusted_proxies``).

As nginx's realip module with ``set_real_ip_from`` and ``real_ip_recursive on``: the
headers count only when the peer that connected is a trusted proxy; then the address is
the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries to
its left were written by the client and prove nothing). ``X-Real-Ip`` is read only when
there is no ``X-Forwarded-For``. A peer outside the list cannot choose its address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import tornado.httputil

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def trusts(self, address: str) -> bool:
        parsed = _parse(address)
        return parsed is not None and self._trusted(parsed)

    def _trusted(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in network for network in self.networks)

    def client_address(self, peer: str, headers: tornado.httputil.HTTPHeaders) -> str:
        """``peer``: the address of the socket's other end."""
        if not self.networks or not self.trusts(peer):
            return peer
        forwarded = headers.get_list("X-Forwarded-For")
        if forwarded:
            entries = [entry.strip() for line in forwarded for entry in line.split(",")]
            nearest = peer
            for entry in reversed(entries):
                parsed = _parse(entry)
                if parsed is None:
                    # garbage from whoever wrote it: the last proxy we trust answered for `nearest`
                    return nearest
                if not self._trusted(parsed):
                    return str(parsed)
                nearest = str(parsed)
            return nearest  # every hop a trusted proxy: the left-most is the client
        real = _parse(headers.get("X-Real-Ip", "").strip())
        return str(real) if real is not None else peer


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
