"""Where a job's `image_url` may lead: the `image_url.allow` list, applied after DNS.

A URL from a job (an MQTT client, an SQS producer on the internet side) must not turn the
bridge into a window on the home network. So the host is resolved here, every address is
checked, and the fetch then connects to the very address that was checked (the name is kept
for the Host header and TLS), so a DNS answer that changes between check and connect
(rebinding) reaches nothing new. Redirects come back here hop by hop.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[Address]]]


class UrlRefused(Exception):
    """The URL may not be fetched; the message is for the log, never for the requester."""


@dataclass(frozen=True)
class Target:
    """One hop of a fetch: the URL with the checked address in place of the name."""

    url: httpx.URL
    host_header: str  # the name (and port) as the URL gave them, for Host
    address: Address
    extensions: dict[str, Any]


async def system_resolver(host: str, port: int) -> list[Address]:
    """The addresses the system resolver gives for `host` (getaddrinfo, off the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [_plain(ipaddress.ip_address(info[4][0])) for info in infos]


class UrlGuard:
    """Checks URLs against `image_url.allow`: host names, and addresses or networks."""

    def __init__(self, allow: Sequence[str], resolver: Resolver = system_resolver) -> None:
        self._names: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._resolver = resolver
        for entry in allow:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if entry.startswith("*."):
                    self._suffixes.append(entry[1:])
                else:
                    self._names.add(entry)

    @property
    def enabled(self) -> bool:
        """False when nothing is allowed: image_url is then refused before any lookup."""
        return bool(self._names or self._suffixes or self._networks)

    def _name_listed(self, host: str) -> bool:
        return host in self._names or any(host.endswith(suffix) for suffix in self._suffixes)

    def address_allowed(self, host: str, address: Address) -> bool:
        """An address inside a listed network, or a public address of a listed name."""
        if any(address in network for network in self._networks):
            return True
        return self._name_listed(host) and is_public(address)

    async def check(self, url: str) -> Target:
        """The hop to make for `url`, pinned to an allowed address; UrlRefused otherwise."""
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise UrlRefused(f"scheme {parsed.scheme!r} is not http or https")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise UrlRefused("the URL has no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
        elif not (self._name_listed(host) or self._networks):
            raise UrlRefused(f"host {host!r} is not in image_url.allow")  # not even looked up
        else:
            try:
                addresses = await self._resolver(host, port)
            except OSError as exc:
                raise UrlRefused(f"host {host!r} does not resolve: {exc}") from None
        allowed = [a for a in addresses if self.address_allowed(host, a)]
        if not allowed:
            shown = ", ".join(str(a) for a in addresses) or "no address"
            raise UrlRefused(f"host {host!r} ({shown}) is not allowed by image_url.allow")
        address = allowed[0]
        extensions: dict[str, Any] = {}
        if parsed.scheme == "https" and literal is None:
            extensions["sni_hostname"] = host  # the certificate is checked against the name
        return Target(parsed.copy_with(host=str(address)), parsed.netloc.decode("ascii"), address, extensions)


def is_public(address: Address) -> bool:
    """A globally routable unicast address (not loopback, private, link-local, unique-local…)."""
    return address.is_global and not address.is_multicast and not address.is_unspecified


def _literal(host: str) -> Address | None:
    try:
        return _plain(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
