"""HTTPS the way company websites are fetched: the connection goes to the address the guard checked,
and the certificate is verified against the host name (SNI), never against that IP. A real TLS server
on loopback with certificates from a test CA (trustme)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.companies.helpers import profiles, run
from tests.companies.sites import Sites
from trailmark.settings import CompaniesSettings
from trailmark.storage.chdb_backend import ChdbStorage

PAGE = b"""<html><head><script type="application/ld+json">
{"@context": "https://schema.org", "@type": "Organization", "name": "TLS Co"}</script></head></html>"""


class _Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.hosts.append(self.headers.get("host") or "")
        status, body = (404, b"none") if self.path == "/robots.txt" else (200, PAGE)
        self.send_response(status)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client refusing the certificate hangs up mid-handshake: that is the test


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, CA file) of an HTTPS server whose certificate names acme-tls.example only."""
    ca = trustme.CA()
    cert = ca.issue_cert("acme-tls.example")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    srv = _TLSServer(("127.0.0.1", 0), _Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield srv.server_address[1], ca_file
    srv.shutdown()
    srv.server_close()


def https(sites: Sites, port: int, **extra: Any) -> CompaniesSettings:
    env = sites.settings_env(dns=False, rdap=False, url_template=f"https://{{domain}}:{port}/", **extra)
    env["ports"] = [*env["ports"], port]
    return CompaniesSettings(**env)


async def test_https_to_the_checked_address_with_the_certificate_checked_for_the_name(
    sites: Sites, chdb: ChdbStorage, tls: tuple[int, Path]
) -> None:
    port, ca_file = tls
    await run(https(sites, port, ca_file=ca_file), chdb, [("s1", "acme-tls.example")])
    (p,) = profiles(chdb, "acme-tls.example")
    assert (p["status"], p["name"]) == ("ok", "TLS Co"), p["reason"]
    assert p["field_sources"]["name"] == f"https://acme-tls.example:{port}/"
    assert _Handler.hosts[-1] == f"acme-tls.example:{port}"  # the name travels in Host, not the IP


@pytest.mark.parametrize(
    ("domain", "trust", "error"),
    [
        ("acme-tls.example", False, "CERTIFICATE_VERIFY_FAILED"),  # a CA nobody trusts: not fetched
        ("other-tls.example", True, "CERTIFICATE_VERIFY_FAILED"),  # same address, a name the cert lacks
    ],
)
async def test_a_certificate_that_does_not_verify_means_nothing_is_fetched(
    sites: Sites, chdb: ChdbStorage, tls: tuple[int, Path], domain: str, trust: bool, error: str
) -> None:
    port, ca_file = tls
    await run(https(sites, port, ca_file=ca_file if trust else None, retries=0), chdb, [("s1", domain)])
    (p,) = profiles(chdb, domain)
    # robots.txt is the first request: a site whose robots.txt cannot be read is not fetched at all
    assert (p["status"], p["name"]) == ("refused", "")
    assert "robots.txt" in p["reason"] and error in p["reason"]
