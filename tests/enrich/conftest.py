import socket

import pytest

from enrich import Enricher, EnrichSettings


@pytest.fixture
def no_network(monkeypatch):
    """Fail any non-loopback connection or DNS lookup for the duration of one test."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo
    loopback = ("127.0.0.1", "::1", "localhost")

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in loopback and not host.startswith("/"):
            raise AssertionError(f"enrich tried to reach the network: {address!r}")
        return real_connect(self, address)

    def guarded_dns(host, *args, **kwargs):
        if host not in loopback:
            raise AssertionError(f"enrich tried a DNS lookup: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_dns)


@pytest.fixture(scope="session")
def enricher() -> Enricher:
    return Enricher(EnrichSettings(content_groups=[("/blog/*", "Blog"), ("re:^/(pricing|plans)", "Pricing")]))
