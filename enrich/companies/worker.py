"""The lookup worker: takes the domains the enricher asked for and stores their company profiles.

It runs beside the stages (an asyncio task of the process running enrichment; see
trailmark/app.py), never in their path: the enricher only records a wish (``LookupRequests.want``),
so a hung website delays at most its own profile. ``concurrency`` domains are looked up at once,
each once per ``refresh_age_s`` whatever the number of sites asking (a fresh profile stored for one
site is copied for the next); a failed lookup is stored as ``status = error`` with the reason and
retried after a thirtieth of the refresh age. Only an unavailable storage makes it wait (the
domains are put back); nothing a website, DNS server or RDAP service answers can stop it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from enrich.companies.dnsinfo import dns_signals
from enrich.companies.errors import LookupFailed
from enrich.companies.fetch import Fetcher
from enrich.companies.guard import AddressGuard, make_resolver
from enrich.companies.parse import parse_page
from enrich.companies.profile import Profile
from enrich.companies.rdap import rdap_registered
from enrich.companies.wanted import LookupRequests
from trailmark.settings import CompaniesSettings
from trailmark.storage.base import Storage, StorageUnavailable

log = logging.getLogger("trailmark.companies")
LOOKUPS = Counter("trailmark_company_lookups_total", "Company domains looked up, by stored status", ["status"])
_HTML = ("text/html", "application/xhtml+xml")


class CompanyLookup:
    """Looks one domain up in every enabled source; never raises for what a source answers."""

    def __init__(self, settings: CompaniesSettings) -> None:
        self.s = settings
        self.resolver = make_resolver(settings.dns_nameserver, settings.dns_timeout_s)
        self.guard = AddressGuard(self.resolver, settings.allow_private_targets)
        self.fetcher = Fetcher(settings, self.guard)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def lookup(self, domain: str) -> Profile:
        p = Profile(domain)
        steps = [("website", self._website), ("dns", self._dns), ("rdap", self._rdap)]
        for name, step in steps:
            if not getattr(self.s, name):
                continue
            try:
                await step(p)
            except LookupFailed as exc:
                p.failed(name, exc.status, str(exc))
            except Exception as exc:  # a parser's bug must not stop the worker: stored as an error
                log.exception("company lookup %s of %s failed", name, domain)
                p.failed(name, "error", f"{type(exc).__name__}: {exc}")
        return p

    async def _website(self, p: Profile) -> None:
        got = await self.fetcher.get(self.s.url_template.format(domain=p.domain))
        ctype = got.content_type.split(";", 1)[0].strip().lower()
        if ctype not in _HTML:
            p.failed("website", "not_found", f"{got.url} is not HTML ({ctype or 'no content type'})")
            return
        charset = got.content_type.partition("charset=")[2].strip(" \"'") or "utf-8"
        try:
            html = got.body.decode(charset, "replace")
        except LookupError:  # an unknown charset name
            html = got.body.decode("utf-8", "replace")
        found = await asyncio.to_thread(parse_page, html, got.url)  # lxml/extruct: off the event loop
        for name, value in found.items():
            p.put(name, value, got.url)
        if got.truncated:
            p.reasons.append(f"website: {got.url} read up to {self.s.max_bytes} bytes only")

    async def _dns(self, p: Profile) -> None:
        sig = await dns_signals(self.resolver, p.domain)
        p.put("mail_provider", sig.mail_provider, f"dns:MX {p.domain}")
        p.put("mx", sig.mx, f"dns:MX {p.domain}")
        p.put("technologies", sig.technologies, f"dns:TXT {p.domain}")

    async def _rdap(self, p: Profile) -> None:
        when, url = await rdap_registered(self.fetcher, self.s.rdap_base_url, p.domain)
        if when is not None:
            p.registered_at = when
            p.put("registered_at", when.isoformat(), f"rdap:{url}")


class CompanyWorker:
    """Drains ``LookupRequests`` into ``company_profiles_data``; ``run`` until cancelled. It runs in
    the process that holds the storage (the journeys role); enricher processes elsewhere hand their
    asks over the bus (trailmark/app.py)."""

    def __init__(self, settings: CompaniesSettings, storage: Storage, wanted: LookupRequests) -> None:
        self.s = settings
        self._storage = storage
        self.wanted = wanted
        self.lookups = CompanyLookup(settings)
        self._in_flight: dict[str, set[str]] = {}  # domain -> sites waiting for the lookup under way
        self.done = 0  # domains finished (stored), for tests and logs

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing under way."""
        return not self._in_flight and len(self.wanted) == 0

    @property
    def storage(self) -> Storage:
        return self._storage

    async def run(self, poll_s: float = 0.2) -> None:
        try:
            await asyncio.gather(*(self._consume(poll_s) for _ in range(max(1, self.s.concurrency))))
        finally:
            await self.lookups.aclose()

    async def _consume(self, poll_s: float) -> None:
        while True:
            taken = self.wanted.take(1)
            if not taken:
                await asyncio.sleep(poll_s)
                continue
            site_id, domain = taken[0]
            if domain in self._in_flight:  # another consumer is looking it up: its result serves both
                self._in_flight[domain].add(site_id)
                continue
            self._in_flight[domain] = {site_id}
            try:
                await self._domain(domain)
            except StorageUnavailable as exc:
                log.warning("company profiles: storage unavailable (%s); retrying %s", exc, domain)
                self.wanted.again([(s, domain) for s in self._in_flight.get(domain, ())])
                await asyncio.sleep(1.0)
            except Exception:  # never let one domain end the worker
                log.exception("company profiles: %s failed", domain)
            finally:
                self._in_flight.pop(domain, None)

    async def _domain(self, domain: str) -> None:
        now = datetime.now(UTC)
        stored = await asyncio.to_thread(self._stored, domain)
        fresh = [r for r in stored if self._fresh(r, now)]
        rows: list[dict[str, Any]] = []
        if fresh:  # looked up recently for some site: the same profile for the others
            have = {r["site_id"] for r in fresh}
            rows = [{**fresh[0], "site_id": s, "version": int(now.timestamp() * 1000)}
                    for s in self._in_flight[domain] - have]  # fmt: skip
        else:
            profile = await self.lookups.lookup(domain)
            LOOKUPS.labels(profile.status).inc()
            rows = [profile.row(s, now) for s in sorted(self._in_flight[domain])]
        if rows:
            await asyncio.to_thread(self.storage.insert, "company_profiles_data", rows)
        self.done += 1

    def _fresh(self, row: dict[str, Any], now: datetime) -> bool:
        fetched = datetime.fromisoformat(str(row["fetched_at"])).replace(tzinfo=UTC)
        age = self.s.refresh_age_s / (30 if row["status"] == "error" else 1)
        return (now - fetched).total_seconds() < age

    def _stored(self, domain: str) -> list[dict[str, Any]]:
        db = self.storage.database
        return self.storage.query(
            f"SELECT * EXCEPT version FROM {db}.company_profiles_data FINAL WHERE domain = {{d:String}}"
            " ORDER BY fetched_at DESC",
            {"d": domain},
        )


__all__ = ["CompanyLookup", "CompanyWorker"]
