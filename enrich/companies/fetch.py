"""HTTP for company lookups: httpx, async, and polite and safe by construction.

- every hop (the first URL and each redirect, followed here, not by httpx) is checked by the
  ``AddressGuard`` and connected to at the checked address, with the name kept for ``Host`` and TLS;
- http/https on the configured ports only; no credentials in URLs, none from the environment
  (``trust_env=False``: no proxies, no .netrc), no cookies kept (a jar that accepts none);
- robots.txt of each origin is read first and obeyed for the user agent (cached per origin);
- bounded: ``concurrency`` requests at once, one request per ``per_host_interval_s`` per host, one
  deadline per request, bodies read as a stream and cut at ``max_bytes``;
- retries with doubling backoff after network errors, timeouts, 429 and 5xx; never after a refusal.

Errors leave as the lookup tree (enrich/companies/errors.py), never as httpx's.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib import robotparser
from urllib.parse import urljoin, urlsplit

import httpx

from enrich.companies.errors import LookupFailed, NotFound, SourceFailed, TargetRefused
from enrich.companies.guard import AddressGuard
from trailmark.settings import CompaniesSettings

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_ROBOTS_MAX_BYTES = 256 * 1024
_ROBOTS_CACHE = 10_000
_ROBOTS_TTL_S = 24 * 3600  # as crawlers do: a site's robots.txt is read again after a day


@dataclass(frozen=True)
class Fetched:
    """One answer: the URL it came from (after redirects, with the host name), status and body."""

    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool
    location: str = ""  # of a redirect


class Fetcher:
    """One per worker: an ``httpx.AsyncClient`` with no cookies and no environment, plus the limits."""

    def __init__(self, settings: CompaniesSettings, guard: AddressGuard) -> None:
        self.s = settings
        self.guard = guard
        self._sem = asyncio.Semaphore(max(1, settings.concurrency))
        self._host_locks: dict[str, asyncio.Lock] = {}
        self._host_last: dict[str, float] = {}
        # origin -> (when read, rules, why all is disallowed); rules None: allow all
        self._robots: dict[str, tuple[float, robotparser.RobotFileParser | None, str]] = {}
        verify: ssl.SSLContext | bool = True  # certificates checked against the host name (SNI), not the IP
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self.client = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(settings.timeout_s),
            follow_redirects=False,  # each hop goes through the guard here
            trust_env=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # accepts no cookie
            headers={"user-agent": settings.user_agent, "accept-language": "en;q=0.9, *;q=0.5"},
        )
        self.requests_sent = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def get(
        self, url: str, *, accept: str = "text/html", robots: bool = True, max_bytes: int = 0, errors: bool = True
    ) -> Fetched:
        """GET ``url`` following redirects (each checked); robots.txt first when ``robots``.
        An HTTP error status raises (404/410: NotFound, others: SourceFailed) unless not ``errors``."""
        cap = max_bytes or self.s.max_bytes
        for _ in range(self.s.max_redirects + 1):
            parts = self._checked(url)
            if robots:
                await self._robots_allow(parts, url)
            got = await self._hop(parts, url, accept, cap)
            if got.status in _REDIRECTS and got.location:
                url = urljoin(url, got.location)
                continue
            if errors and got.status in (404, 410):
                raise NotFound(f"{url[:200]}: HTTP {got.status}")
            if errors and got.status >= 400:
                raise SourceFailed(f"{url[:200]}: HTTP {got.status}")
            return got
        raise TargetRefused(f"more than {self.s.max_redirects} redirects")

    # -- one hop ------------------------------------------------------------------------------------
    def _checked(self, url: str) -> httpx.URL:
        try:
            u = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise TargetRefused(f"not a URL: {url[:200]}") from exc
        if u.scheme not in ("http", "https"):
            raise TargetRefused(f"scheme {u.scheme!r} is not fetched")
        if u.userinfo:
            raise TargetRefused("credentials in a URL are not sent")
        port = u.port or (443 if u.scheme == "https" else 80)
        if port not in self.s.ports:
            raise TargetRefused(f"port {port} is not fetched")
        if not u.host:
            raise TargetRefused(f"no host in {url[:200]}")
        return u

    async def _hop(self, u: httpx.URL, url: str, accept: str, cap: int) -> Fetched:
        attempt = 0
        while True:
            try:
                return await self._once(u, url, accept, cap)
            except _Retry as exc:
                if attempt >= self.s.retries:
                    raise SourceFailed(exc.reason) from exc
                await asyncio.sleep(self.s.retry_backoff_s * 2**attempt)
                attempt += 1

    async def _once(self, u: httpx.URL, url: str, accept: str, cap: int) -> Fetched:
        host = u.raw_host.decode("ascii")
        ips = await self.guard.resolve(host)  # refused or not found: not retried
        pinned = u.copy_with(host=str(ips[0]))
        async with self._sem:
            await self._pace(host)
            self.requests_sent += 1
            try:
                async with asyncio.timeout(self.s.timeout_s):
                    req = self.client.build_request(
                        "GET",
                        pinned,
                        headers={"host": u.netloc.decode("ascii"), "accept": accept},
                        extensions={"sni_hostname": host},
                    )
                    resp = await self.client.send(req, stream=True)
                    try:
                        body, truncated = await _read(resp, cap)
                    finally:
                        await resp.aclose()
            except TimeoutError as exc:
                raise _Retry(f"{url[:200]}: no answer within {self.s.timeout_s:g} s") from exc
            except httpx.TimeoutException as exc:
                raise _Retry(f"{url[:200]}: timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise _Retry(f"{url[:200]}: {type(exc).__name__}: {str(exc)[:200]}") from exc
            except httpx.HTTPError as exc:
                raise SourceFailed(f"{url[:200]}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        status = resp.status_code
        if status in _RETRY_STATUS:
            raise _Retry(f"{url[:200]}: HTTP {status}")
        h = resp.headers
        return Fetched(url, status, h.get("content-type", ""), body, truncated, h.get("location", ""))

    async def _pace(self, host: str) -> None:
        """At most one request per ``per_host_interval_s`` to one host."""
        lock = self._host_locks.setdefault(host, asyncio.Lock())
        async with lock:
            wait = self._host_last.get(host, 0.0) + self.s.per_host_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._host_last[host] = time.monotonic()
        if len(self._host_locks) > 10_000:  # bounded memory: forget idle hosts
            for h in [h for h, lk in self._host_locks.items() if not lk.locked() and h != host]:
                self._host_locks.pop(h, None)
                self._host_last.pop(h, None)

    # -- robots.txt ---------------------------------------------------------------------------------
    async def _robots_allow(self, u: httpx.URL, url: str) -> None:
        origin = f"{u.scheme}://{u.netloc.decode('ascii')}"
        cached = self._robots.get(origin)
        if cached is None or time.monotonic() - cached[0] > _ROBOTS_TTL_S:
            if len(self._robots) >= _ROBOTS_CACHE:
                self._robots.clear()
            cached = self._robots[origin] = (time.monotonic(), *await self._robots_rules(origin))
        _, rules, why = cached
        if rules is not None and not rules.can_fetch(self.s.user_agent, url):
            raise TargetRefused(f"robots.txt of {origin} {why or 'disallows'} {urlsplit(url).path or '/'}")

    async def _robots_rules(self, origin: str) -> tuple[robotparser.RobotFileParser | None, str]:
        """The origin's rules, as crawlers read them: none (4xx) allows all; 401/403, 5xx or no answer
        disallow all, so a site that cannot say "no" is not fetched. Also why it disallows all, if so."""
        rp = robotparser.RobotFileParser()
        try:
            got = await self.get(
                origin + "/robots.txt", accept="text/plain", robots=False, max_bytes=_ROBOTS_MAX_BYTES, errors=False
            )
        except (TargetRefused, NotFound):  # refused, or the host has no address: the page has neither
            raise
        except LookupFailed as exc:
            rp.parse(["User-agent: *", "Disallow: /"])
            return rp, f"could not be read ({exc}), so nothing is fetched, not even"
        if got.status in (401, 403) or got.status >= 500:
            rp.parse(["User-agent: *", "Disallow: /"])
            return rp, f"answered HTTP {got.status}, so nothing is fetched, not even"
        if got.status >= 400:
            return None, ""
        rp.parse(got.body.decode("utf-8", "replace").splitlines())
        return rp, ""


class _Retry(SourceFailed):
    """A hop that may succeed if tried again (network, timeout, 429, 5xx); ``_hop`` retries it and
    raises a plain ``SourceFailed`` once the retries are used up."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _read(resp: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """The body up to ``cap`` bytes; the connection is dropped rather than read to its end."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False


__all__ = ["Fetched", "Fetcher"]
