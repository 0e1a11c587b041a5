"""Client addresses and per-key IP access lists."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator
from starlette.requests import HTTPConnection

from keyhouse.api.wire import Wire
from keyhouse.config import IPNetwork


def parse_source(source: str) -> IPNetwork:
    """An IPv4/IPv6 address or CIDR; raises ValueError when it is neither."""
    return ipaddress.ip_network(source.strip(), strict=False)


def request_address(request: HTTPConnection, trusted_proxies: Sequence[IPNetwork]) -> str | None:
    """The client address of a request (see ``client_address``)."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted_proxies)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[IPNetwork]
) -> str | None:
    """The socket peer, or the right-most untrusted X-Forwarded-For hop behind trusted proxies.
    ``forwarded_for`` holds every X-Forwarded-For header line, in order: a proxy that appends
    its own line must not let the client choose its address with a line of its own."""
    if peer is None or not trusted_proxies or not forwarded_for:
        return peer
    if not in_networks(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for line in forwarded_for for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def in_networks(address: str, networks: Sequence[IPNetwork]) -> bool:
    """True when ``address`` is an IP inside one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def ip_allowed(access_list: list[dict[str, Any]] | None, address: str | None) -> bool:
    """``None`` allows everywhere; an empty list allows nowhere."""
    return address_allowed(access_networks(access_list), address)


def access_networks(access_list: list[dict[str, Any]] | None) -> tuple[IPNetwork, ...] | None:
    """An IP access list's networks (``None``: everywhere)."""
    if access_list is None:
        return None
    return tuple(parse_source(entry["source"]) for entry in access_list)


@functools.lru_cache(maxsize=8192)
def address_allowed(networks: tuple[IPNetwork, ...] | None, address: str | None) -> bool:
    """Whether ``address`` is inside one of ``networks`` (an IPv4-mapped IPv6 address counts as
    its IPv4 address). Remembered: a key's list and its clients' addresses repeat."""
    if networks is None:
        return True
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in networks)


class IpAccessListEntry(Wire):
    source: str = Field(description="IP or CIDR")
    description: str | None = Field(default=None, max_length=255)

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        try:
            return str(parse_source(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4/IPv6 address or CIDR") from None
