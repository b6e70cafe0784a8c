"""Fixture company sites on loopback: one real HTTP server answering by Host, a DNS server (dnslib)
answering A, MX and TXT for them, and an RDAP endpoint (JSON) on the same HTTP server.

Every name resolves to 127.0.0.1 except ``internal.example``, which resolves to 127.0.0.2, where a
second server ("the internal service") counts what reaches it: the SSRF tests allow only
127.0.0.1/32, so a redirect there must be refused before any byte is sent to it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

BIG_BYTES = 20 * 1024 * 1024

JSONLD = """<!doctype html><html lang="de"><head><title>Acme JSON-LD – Home</title>
<meta name="description" content="Widgets since 1999">
<link rel="icon" href="/favicon.ico">
<script type="application/ld+json">{"@context": "https://schema.org", "@graph": [
 {"@type": "WebSite", "name": "not the company"},
 {"@type": "Corporation", "name": "Acme Widgets", "legalName": "Acme Widgets GmbH",
  "logo": {"@type": "ImageObject", "url": "/logo.png"}, "foundingDate": "1999-04-01",
  "numberOfEmployees": {"@type": "QuantitativeValue", "minValue": 11, "maxValue": 50},
  "address": {"@type": "PostalAddress", "streetAddress": "Hauptstr. 1", "postalCode": "10115",
              "addressLocality": "Berlin", "addressCountry": "DE"},
  "sameAs": ["https://www.linkedin.com/company/acme-widgets", "https://x.com/acmewidgets"]}]}
</script></head><body><a href="https://github.com/acme-widgets">code</a>
<a href="https://www.facebook.com/sharer/sharer.php?u=x">share</a></body></html>"""

MICRODATA = """<!doctype html><html lang="en"><head><title>Micro</title></head><body>
<div itemscope itemtype="https://schema.org/Organization">
 <span itemprop="name">Micro Data Ltd</span>
 <img itemprop="logo" src="https://cdn.micro.example/logo.svg">
 <div itemprop="address" itemscope itemtype="https://schema.org/PostalAddress">
  <span itemprop="addressLocality">London</span><span itemprop="addressCountry">GB</span></div>
 <span itemprop="foundingDate">2011</span>
</div></body></html>"""

OPENGRAPH = """<!doctype html><html lang="fr"><head><title>OG Only</title>
<meta property="og:site_name" content="Open Graph SA"><meta property="og:image" content="/og.png">
<meta name="description" content="Seulement OpenGraph">
<link rel="shortcut icon" href="/fav.png"></head>
<body><a href="https://www.youtube.com/@ogonly">videos</a><a href="https://www.instagram.com/ogonly/">insta</a>
<a href="https://twitter.com/intent/tweet?text=x">tweet this</a></body></html>"""

FINAL = """<html><head><title>Final</title><script type="application/ld+json">
{"@context": "https://schema.org", "@type": "Organization", "name": "Final Hop Inc"}</script></head></html>"""

BIG_HEAD = (
    '<html><head><script type="application/ld+json">'
    '{"@context": "https://schema.org", "@type": "Organization", "name": "Big Page Co"}</script></head><body>'
)

RDAP = {
    "objectClassName": "domain",
    "ldhName": "ACME-JSONLD.EXAMPLE",
    "events": [
        {"eventAction": "last changed", "eventDate": "2024-01-01T00:00:00Z"},
        {"eventAction": "registration", "eventDate": "2001-02-03T04:05:06Z"},
    ],
}


@dataclass
class Record:
    """What the fixture servers saw."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # host, path, headers
    big_sent: int = 0
    internal_hits: int = 0

    def paths(self, host: str) -> list[str]:
        return [p for h, p, _ in self.requests if h == host]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up on the 20 MB page is the point of that test


class Sites:
    """Starts the servers; ``port`` of the sites, ``internal_port`` of the internal one, ``dns``."""

    def __init__(self) -> None:
        self.record = Record()
        self.slow_s = 30.0
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        self.internal = _Server(("127.0.0.2", 0), self._internal_handler())
        self.internal_port = self.internal.server_address[1]
        quiet = DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data")
        self.dns = DNSServer(_Resolver(self), port=0, address="127.0.0.1", logger=quiet)
        self.dns_port = self.dns.server.server_address[1]
        self.hang_ms: Counter[str] = Counter()

    def start(self) -> Sites:
        for srv in (self.httpd, self.internal):
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.dns.start_thread()
        return self

    def stop(self) -> None:
        for srv in (self.httpd, self.internal):
            srv.shutdown()
            srv.server_close()
        self.dns.stop()
        self.dns.server.server_close()

    def settings_env(self, **extra: Any) -> dict[str, Any]:
        """CompaniesSettings values pointing at these servers (loopback 127.0.0.1 only allowed)."""
        return {
            "enabled": True,
            "url_template": f"http://{{domain}}:{self.port}/",
            "dns_nameserver": f"127.0.0.1:{self.dns_port}",
            "rdap_base_url": f"http://rdap.example:{self.port}/",
            "ports": [self.port, self.internal_port, 80],
            "allow_private_targets": ["127.0.0.1/32"],
            "per_host_interval_s": 0.0,
            "timeout_s": 2.0,
            "retries": 1,
            "retry_backoff_s": 0.05,
            "dns_timeout_s": 2.0,
            **extra,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sites = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", **headers: str) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                host = (self.headers.get("host") or "").split(":")[0]
                sites.record.requests.append((host, self.path, {k.lower(): v for k, v in self.headers.items()}))
                port = sites.port
                if self.path == "/robots.txt":
                    if host == "robots.example":
                        return self.send(200, b"User-agent: *\nDisallow: /\n", "text/plain")
                    if host == "robots-ua.example":  # only trailmark is kept out
                        rules = b"User-agent: trailmark\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
                        return self.send(200, rules, "text/plain")
                    return self.send(404, b"no robots", "text/plain")
                if host == "rdap.example":
                    if self.path == "/domain/acme-jsonld.example":
                        return self.send(200, orjson.dumps(RDAP), "application/rdap+json")
                    return self.send(404, b"{}", "application/rdap+json")
                if host == "acme-jsonld.example":
                    return self.send(200, JSONLD.encode())
                if host == "acme-micro.example":
                    return self.send(200, MICRODATA.encode())
                if host == "acme-og.example":
                    return self.send(200, OPENGRAPH.encode())
                if host == "redirect.example":
                    if self.path == "/":
                        return self.send(301, b"", location="/step", set_cookie="session=secret; Path=/")
                    if self.path == "/step":
                        return self.send(302, b"", location=f"http://final.example:{port}/home")
                if host == "final.example" and self.path == "/home":
                    return self.send(200, FINAL.encode())
                if host == "private.example":
                    return self.send(302, b"", location=f"http://internal.example:{sites.internal_port}/admin")
                if host == "metadata.example":
                    return self.send(302, b"", location="http://169.254.169.254/latest/meta-data/")
                if host == "tennet.example":
                    return self.send(302, b"", location=f"http://10.0.0.1:{port}/")
                if host == "loop.example":
                    return self.send(302, b"", location=self.path + "x")
                if host == "slow.example":
                    time.sleep(sites.slow_s)
                    return self.send(200, FINAL.encode())
                if host == "big.example":
                    return self.big()
                if host == "pdf.example":
                    return self.send(200, b"%PDF-1.7 ...", "application/pdf")
                if host == "flaky.example":
                    sites.hang_ms["flaky"] += 1
                    if sites.hang_ms["flaky"] == 1:
                        return self.send(503, b"try again")
                    return self.send(200, JSONLD.replace("Acme Widgets", "Flaky Co").encode())
                return self.send(404, b"not here")

            def big(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(BIG_BYTES))
                self.end_headers()
                chunk = b"x" * 65536
                sent = 0
                try:
                    self.wfile.write(BIG_HEAD.encode())
                    sent = len(BIG_HEAD)
                    while sent < BIG_BYTES:
                        part = chunk[: BIG_BYTES - sent]
                        self.wfile.write(part)
                        sent += len(part)
                        sites.record.big_sent = sent
                except OSError:  # the client hung up: what was sent is recorded
                    pass
                sites.record.big_sent = sent

        return Handler

    def _internal_handler(self) -> type[BaseHTTPRequestHandler]:
        sites = self

        class Internal(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                sites.record.internal_hits += 1
                body = b"<html><head><title>INTERNAL SECRET</title></head></html>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Internal


class _Resolver(BaseResolver):  # type: ignore[misc]
    """A for every name (127.0.0.1; internal.example: 127.0.0.2), MX and TXT for the company domains."""

    MX = {"acme-jsonld.example": ["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
          "acme-micro.example": ["mx1.acme-micro.example"],
          "acme-og.example": ["acme-og-example.mail.protection.outlook.com"]}  # fmt: skip
    TXT = {"acme-jsonld.example": ["google-site-verification=abc123",
                                   "v=spf1 include:_spf.google.com include:sendgrid.net ~all",
                                   "atlassian-domain-verification=xyz", "MS=ms12345"],
           "acme-micro.example": ["stripe-verification=1234"]}  # fmt: skip

    def __init__(self, sites: Sites) -> None:
        self.sites = sites

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if qname.startswith("nx") or not qname.endswith(".example"):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if qtype == "A":
            ip = "127.0.0.2" if qname == "internal.example" else "127.0.0.1"
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(ip), ttl=60))
        elif qtype == "AAAA" and qname == "v6.example":
            reply.add_answer(RR(qname, QTYPE.AAAA, rdata=AAAA("::1"), ttl=60))
        elif qtype == "MX":
            for i, host in enumerate(self.MX.get(qname, [])):
                reply.add_answer(RR(qname, QTYPE.MX, rdata=MX(host, 10 * (i + 1)), ttl=60))
        elif qtype == "TXT":
            for text in self.TXT.get(qname, []):
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(text), ttl=60))
        return reply
