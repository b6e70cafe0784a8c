"""The SSRF guard and the URL checks, without the network: addresses that must never be fetched."""

from __future__ import annotations

import pytest

from enrich.companies import TargetRefused
from enrich.companies.fetch import Fetcher
from enrich.companies.guard import AddressGuard, make_resolver
from trailmark.settings import CompaniesSettings

# a resolver pointed at a closed loopback port: literals must never need it
GUARD = AddressGuard(make_resolver("127.0.0.1:9", 0.2))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "[::1]",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space (carrier NAT)
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::ffff:10.0.0.1",  # IPv4-mapped IPv6 of a private address
        "fe80::1",
        "fc00::1",
    ],
)
async def test_non_public_addresses_are_refused(host: str) -> None:
    with pytest.raises(TargetRefused, match="not a public address"):
        await GUARD.resolve(host)


async def test_public_addresses_pass_and_allowed_networks_are_let_through() -> None:
    assert [str(ip) for ip in await GUARD.resolve("93.184.215.14")] == ["93.184.215.14"]
    allowing = AddressGuard(make_resolver("127.0.0.1:9", 0.2), ["127.0.0.1/32"])
    assert [str(ip) for ip in await allowing.resolve("127.0.0.1")] == ["127.0.0.1"]
    with pytest.raises(TargetRefused):
        await allowing.resolve("127.0.0.2")  # loopback, but not the allowed network


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "scheme"),
        ("ftp://acme.example/", "scheme"),
        ("http://user:secret@acme.example/", "credentials"),
        ("http://acme.example:22/", "port 22"),
        ("gopher://acme.example/", "scheme"),
    ],
)
async def test_urls_that_are_never_fetched(url: str, why: str) -> None:
    fetcher = Fetcher(CompaniesSettings(), GUARD)
    try:
        with pytest.raises(TargetRefused, match=why):
            await fetcher.get(url)
        assert fetcher.requests_sent == 0
    finally:
        await fetcher.aclose()
