import socket

import pytest

from enrich import Enricher, EnrichSettings


@pytest.fixture(scope="session")
def no_network():
    """Fail any non-loopback connection: enrichment data must come from installed packages only."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("/"):
            raise AssertionError(f"enrich tried to reach the network: {address!r}")
        return real_connect(self, address)

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", guarded)
    mp.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(AssertionError(f"DNS: {a!r}")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def enricher(no_network) -> Enricher:
    return Enricher(EnrichSettings(content_groups=[("/blog/*", "Blog"), ("re:^/(pricing|plans)", "Pricing")]))


def page_event(url="https://www.example.com/", referrer="", **extra):
    ev = {
        "v": 1, "site_id": "site1", "message_id": "m1", "type": "page", "anonymous_id": "a1", "user_id": "",
        "previous_id": "", "group_id": "", "event": "", "properties": {}, "traits": {},
        "context": {"page": {"url": url, "referrer": referrer, "title": "Home"}},
        "timestamp": "2026-01-01T00:00:00Z", "original_timestamp": "", "sent_at": "", "received_at": "",
        "ip": "", "user_agent": "",
    }
    ev.update(extra)
    return ev
