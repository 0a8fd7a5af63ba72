"""Which URLs and addresses an ``image_url`` may reach: pure functions, no I/O.

The worker fetches URLs given by clients, so it must not become a way into the network it
runs in (SSRF). A URL must be http or https with a host and no credentials; every address
its host resolves to must be public: loopback, private, link-local, multicast, reserved,
unspecified and cloud-metadata addresses are refused, unless an allowed network
(``IMAGE_URL_ALLOWED_NETWORKS``) holds them. The fetcher then connects to the very address
checked here, so a DNS answer that changes between check and connect changes nothing.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
METADATA = tuple(ipaddress.ip_network(n) for n in (
    "169.254.169.254/32",   # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "168.63.129.16/32",     # Azure wire server
    "100.100.100.200/32",   # Alibaba Cloud
    "fd00:ec2::254/128",    # AWS over IPv6
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(ValueError):
    """Not a URL the worker may fetch; the message is safe to show to the client."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str       # a name or an address literal, without brackets
    port: int
    path: str       # path and query, what the request line carries

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """``"127.0.0.1/32, 10.0.0.0/8"`` -> networks; raises ``ValueError`` naming the bad entry."""
    out = []
    for item in (text or "").split(","):
        if item.strip():
            try:
                out.append(ipaddress.ip_network(item.strip(), strict=True))
            except ValueError as exc:
                raise ValueError(f"{item.strip()!r} is not a network in CIDR form ({exc})") from None
    return tuple(out)


def parse_url(url: str) -> Target:
    """The parts of an http(s) URL the fetcher needs, or ``UrlRefused``."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL must be 1 to {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UrlRefused("the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("the URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlRefused("only http and https URLs are fetched")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL must not hold credentials")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname, port or SCHEMES[scheme], path)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is what it reaches."""
    if address.version != 6:
        return None
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why the worker must not connect to ``address`` (a short word), or None when it may."""
    embedded = _embedded_ipv4(address)
    forms = (address, embedded) if embedded else (address,)
    if any(a in net for a in forms for net in allowed if a.version == net.version):
        return None
    a = forms[-1]
    if a.is_loopback:
        return "loopback"
    if any(a in net for net in METADATA if a.version == net.version):
        return "cloud metadata"
    if a.is_link_local:
        return "link-local"
    if a.is_multicast:
        return "multicast"
    if a.is_unspecified:
        return "unspecified"
    if a.is_private:
        return "private"
    if not a.is_global:
        return "reserved"
    return None
