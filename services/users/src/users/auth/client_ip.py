"""The client address used for rate limits: X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

from users.config import IpNetwork


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_ip(request: Request, trusted_proxies: Sequence[IpNetwork]) -> str:
    """Walk X-Forwarded-For from the right (the hops our proxies appended) and stop at the first
    address that is not a trusted proxy; entries further left are the client's own claims."""
    peer_text = request.client.host if request.client else ""
    peer = _parse(peer_text)
    if peer is None:
        return peer_text or "unknown"

    def trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in trusted_proxies)

    if not trusted(peer):
        return str(peer)
    hops = [
        hop for header in request.headers.getlist("x-forwarded-for") for hop in header.split(",")
    ]
    current = peer
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break
        current = address
        if not trusted(address):
            break
    return str(current)
