"""The SSRF guard: a host is fetched only at public addresses, checked after DNS resolution.

``resolve`` answers the addresses to connect to, and the fetcher connects to exactly those (the name
is not resolved again by the HTTP client), so a DNS answer that changes between the check and the
connection (rebinding) cannot reach an internal address. Every redirect hop goes through it again.

Refused: private, loopback, link-local (cloud metadata at 169.254.169.254), shared (100.64/10),
multicast, reserved and unspecified addresses, IPv4-mapped IPv6 forms of them, and a name whose
answers mix public and non-public addresses. ``allow`` networks (a test setting) are let through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver

from enrich.companies.errors import NotFound, SourceFailed, TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def make_resolver(nameserver: str = "", timeout_s: float = 5.0) -> dns.asyncresolver.Resolver:
    """dnspython's async resolver: the system's resolvers, or one ``host:port`` (tests)."""
    if not nameserver:
        r = dns.asyncresolver.Resolver()
    else:
        host, _, port = nameserver.rpartition(":")
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [host.strip("[]") or nameserver]
        r.port = int(port) if port and host else 53
    r.lifetime = timeout_s
    r.timeout = timeout_s
    return r


class AddressGuard:
    """Resolves a host name and refuses it unless every address is public (or allowed)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, allow: Sequence[str] = ()) -> None:
        self.resolver = resolver
        self.allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allow]

    def check(self, ip: IPAddress) -> None:
        """TargetRefused unless ``ip`` is public or in an allowed network."""
        if any(ip in net for net in self.allow):
            return
        plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        if not plain.is_global or plain.is_multicast or plain.is_reserved or plain.is_unspecified:
            raise TargetRefused(f"{ip} is not a public address")

    async def resolve(self, host: str) -> list[IPAddress]:
        """The checked addresses of ``host`` (an IP literal is checked as it is)."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            self.check(literal)
            return [literal]
        found: list[IPAddress] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(host, rdtype, search=False)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException as exc:
                raise SourceFailed(f"cannot resolve {host}: {type(exc).__name__}") from exc
            found += [ipaddress.ip_address(r.address) for r in answer]
        if not found:
            raise NotFound(f"{host} has no address")
        for ip in found:
            self.check(ip)
        return found


__all__ = ["AddressGuard", "IPAddress", "make_resolver"]
