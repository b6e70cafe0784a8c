"""The Enricher: RawEvent -> EnrichedEvent, one pass, each enrichment isolated.

Parsers and data files load once in ``__init__``; ``enrich`` is a plain function of the event so the
stage runner can call it from any loop. An exception inside one enrichment is recorded in
``enrich_errors`` and the event goes on; only a record that is not an event at all is poison.

Speed: the event's context/page are read once into a ``_Ctx``; everything derived from a page URL,
a referrer URL, a touch (source/medium/...), a UA string or an IP is a cached pure function, so the
steady-state cost per event is a handful of dict look-ups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from enrich.channels import Touch, channel_for
from enrich.contact import find_contact
from enrich.errors import PoisonEvent
from enrich.geo import truncate_ip
from enrich.referrers import VIDEO_SITES, ReferrerClassifier, is_shopping
from enrich.urls import CLICK_ID_INFO, ClickId, campaign_from_context, parse_query, split_url
from schemas.events import ENRICHED_DEFAULTS, EnrichedEvent, RawEvent, Site
from trailmark.errors import Unavailable
from trailmark.settings import EnrichSettings
from trailmark.suppression import Suppression

if TYPE_CHECKING:
    from enrich.companies.wanted import LookupRequests

_DEFAULTS = {k: v for k, v in ENRICHED_DEFAULTS.items() if k != "enrich_errors"}
_REF_MEDIUM = {"search": "organic", "social": "social", "email": "email"}
_NO_CLICK = ClickId("", "", "")
log = logging.getLogger("trailmark.enrich")


def _s(v: object) -> str:
    return v if type(v) is str else ""


def _d(v: object) -> dict[str, Any]:
    return v if type(v) is dict else {}


class PageInfo(NamedTuple):
    host: str
    path: str
    query: str  # tracking parameters removed
    raw_query: str
    utm: tuple[tuple[str, str], ...]
    click_id_type: str
    click_id: str


class RefInfo(NamedTuple):
    host: str
    type: str
    name: str
    search_term: str


_NO_PAGE = PageInfo("", "", "", "", (), "", "")


class _Ctx:
    """What the steps share about one event, read from it once."""

    __slots__ = ("raw", "site", "context", "page", "page_url", "page_info")

    def __init__(self, raw: dict[str, Any], site: Site | None) -> None:
        self.raw = raw
        self.site = site
        self.context = ctx = _d(raw.get("context"))
        page = _d(ctx.get("page"))
        if not page and raw.get("type") == "page":
            page = _d(raw.get("properties"))  # Segment page() puts url/title/referrer in properties
        self.page = page
        self.page_url = _s(page.get("url"))
        self.page_info: PageInfo | None = None


Step = Callable[[_Ctx, dict[str, Any]], None]


class Enricher:
    """Loads every enabled parser/database once; ``enrich`` then costs microseconds per event."""

    def __init__(
        self,
        settings: EnrichSettings | None = None,
        suppression: Suppression | None = None,
        lookups: LookupRequests | None = None,
    ) -> None:
        self.settings = s = settings or EnrichSettings()
        # company domains wanted by the lookup worker (enrich/companies): None when lookups are off
        self.lookups = lookups
        # erased identifiers (trailmark/suppression.py): None where this process has no storage
        self.suppression = suppression
        n = s.cache_size
        self._refs = ReferrerClassifier(n) if (s.referrer or s.channel) else None
        self._ua = None
        if s.user_agent or s.bots:
            from enrich.useragent import UserAgentParser

            self._ua = UserAgentParser(detect_bots=s.bots, cache_size=n)
        self._geo = None
        if s.geo:
            from enrich.geo import GeoLookup

            self._geo = GeoLookup(s.geo_db, s.geo_asn_db, s.geo_fallback, n)
        self._contact = None
        if s.contact and (s.email or s.phone or s.names):
            from enrich.contact import ContactParser

            self._contact = ContactParser(n)
        self._groups = None
        if s.content_group and s.content_groups:
            from enrich.content import ContentGrouper

            self._groups = ContentGrouper(s.content_groups, n)
        self._page_info = lru_cache(maxsize=n)(self._page_info_uncached)
        self._ref_info = lru_cache(maxsize=n)(self._ref_info_uncached)
        self._touch_channel = lru_cache(maxsize=n)(self._touch_channel_uncached)
        steps: list[tuple[str, Step]] = []
        if s.page:
            steps.append(("page", self._page))
        if s.campaign:
            steps.append(("campaign", self._campaign))
        if s.referrer:
            steps.append(("referrer", self._referrer))
        if s.channel:
            steps.append(("channel", self._channel))
        if self._groups is not None:
            steps.append(("content_group", self._content_group))
        if self._ua is not None:
            steps.append(("user_agent", self._user_agent))
        if self._geo is not None:
            steps.append(("geo", self._geo_step))
        if s.truncate_ip:
            steps.append(("privacy", self._privacy))
        if self._contact is not None:
            steps.append(("contact", self._contact_step))
        if lookups is not None:
            from enrich.contact import ContactParser

            self._domains = self._contact or ContactParser(n)
            steps.append(("company_lookup", self._company_lookup))
        self._steps = steps
        self._needs_page = s.page or s.campaign or s.referrer or s.channel or self._groups is not None

    # -- public -------------------------------------------------------------------------------
    def enrich(self, raw: RawEvent, site: Site | None = None) -> EnrichedEvent:
        if not isinstance(raw, dict):
            raise PoisonEvent(f"event is not an object: {type(raw).__name__}")
        site_id = raw.get("site_id")
        if not site_id or type(site_id) is not str:
            raise PoisonEvent("event has no site_id")
        src: dict[str, Any] = raw  # type: ignore[assignment]
        out: dict[str, Any] = {**src, **_DEFAULTS}
        errors: list[str] = []
        out["enrich_errors"] = errors
        c = _Ctx(src, site)
        if self._needs_page:
            try:
                c.page_info = self._page_info(c.page_url, _s(c.page.get("search")))
            except Exception as exc:
                errors.append(f"page: {type(exc).__name__}: {exc}"[:300])
        for name, step in self._steps:
            try:
                step(c, out)
            except Exception as exc:  # one failing enrichment must never drop the event
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        return out  # type: ignore[return-value]

    def erased(self, events: Sequence[EnrichedEvent]) -> list[bool]:
        """For each enriched event of a batch: does it carry an erased identifier? Those are dropped
        here, before the enriched topic, a dead letter or the builder could hold them again."""
        if self.suppression is None or not events:
            return [False] * len(events)
        try:
            self.suppression.changed()  # one count per batch; the lookup itself only after an erasure
            return self.suppression.erased(events)  # type: ignore[arg-type]  # TypedDicts are dicts
        except Unavailable as exc:  # enrichment goes on without storage; the journey builder checks again
            log.warning("suppression list unreachable, the journey builder will check these events: %s", exc)
            return [False] * len(events)

    # -- cached pure parts ----------------------------------------------------------------------
    def _page_info_uncached(self, url: str, search: str) -> PageInfo:
        parts = split_url(url)
        raw_query = parts.query or search.removeprefix("?")
        q = parse_query(raw_query)
        return PageInfo(parts.host, parts.path, q.clean_query, raw_query, tuple(q.utm.items()),
                        q.click_id_type, q.click_id)  # fmt: skip

    def _page_of(self, c: _Ctx) -> PageInfo:
        if c.page_info is None:  # the URL did not parse: that error is recorded once, as "page"
            return _NO_PAGE
        return c.page_info

    def _ref_info_uncached(self, ref_url: str, page_host: str) -> RefInfo:
        assert self._refs is not None
        ref = split_url(ref_url)
        if not ref.host:
            return RefInfo("", "other", "", "")
        if page_host and (
            ref.host == page_host or self._refs.registered_domain(ref.host) == self._refs.registered_domain(page_host)
        ):
            return RefInfo(ref.host, "internal", "", "")
        known = self._refs.host(ref.host)
        if known is None:
            return RefInfo(ref.host, "other", "", "")
        term = _search_term(ref.query, known.params) if known.params and ref.query else ""
        return RefInfo(ref.host, known.type, known.name, term)

    def _touch_channel_uncached(
        self, source: str, medium: str, campaign: str, ctype: str, rtype: str, rname: str, rhost: str
    ) -> tuple[str, str, str]:
        """(channel, source, medium): the one place a touch's source and medium are named (GA's
        convention: lower case, ``google`` / ``organic``), used by the journey builder as they are."""
        assert self._refs is not None
        tagged = bool(source or medium or campaign or ctype)
        known = self._refs.source(source) if source else None
        if not source:
            if rname:
                source = rname.lower()
                known = self._refs.source(source)
            elif ctype:
                # a click id tells the source even when the referrer was stripped (in-app browsers)
                source = CLICK_ID_INFO.get(ctype, _NO_CLICK).source
                known = self._refs.source(source)
            elif rtype not in ("direct", "internal"):
                source = rhost
        if not medium and rtype not in ("direct", "internal") and not (tagged and not rhost):
            medium = _REF_MEDIUM.get(rtype, "referral")
        category = ""
        if known is not None:
            category = "video" if known.name in VIDEO_SITES else known.type
            if category == "other":
                category = ""
        if not category and is_shopping(source):
            category = "shopping"
        channel = channel_for(Touch(source, medium, campaign.lower(), category, ctype, tagged, rtype))
        # an ad click without utm_medium is paid traffic (Google Ads' auto-tagging reports google / cpc)
        return channel, source, medium or CLICK_ID_INFO.get(ctype, _NO_CLICK).medium

    # -- steps ----------------------------------------------------------------------------------
    def _page(self, c: _Ctx, out: dict[str, Any]) -> None:
        p = self._page_of(c)
        out["page_url"] = c.page_url
        out["page_host"] = p.host
        out["page_path"] = p.path or _s(c.page.get("path"))
        out["page_query"] = p.query if self.settings.campaign else p.raw_query
        out["page_title"] = _s(c.page.get("title"))
        if not out["page_path"] and c.raw.get("type") == "screen":
            out["page_path"] = _s(c.raw.get("event"))

    def _campaign(self, c: _Ctx, out: dict[str, Any]) -> None:
        p = self._page_of(c)
        campaign = c.context.get("campaign")
        ctype, click = p.click_id_type, p.click_id
        if campaign:
            tags, context_ctype, context_click = campaign_from_context(campaign)
            for key, val in p.utm:
                tags.setdefault(key, val)
            for key, val in tags.items():
                out[key] = val[:1000]
            if not ctype:  # an app or SPA sends the click id in context.campaign, not in a URL
                ctype, click = context_ctype, context_click
        else:
            for key, val in p.utm:
                out[key] = val[:1000]
        out["click_id_type"] = ctype
        out["click_id"] = click[:500]

    def _referrer(self, c: _Ctx, out: dict[str, Any]) -> None:
        ref_url = _s(c.page.get("referrer")) or _s(c.context.get("referrer"))
        out["referrer"] = ref_url
        if not ref_url:
            out["referrer_type"] = "direct"
            return
        r = self._ref_info(ref_url, self._page_of(c).host)
        out["referrer_host"], out["referrer_type"], out["referrer_name"], out["search_term"] = r

    def _channel(self, c: _Ctx, out: dict[str, Any]) -> None:
        rtype = out["referrer_type"]
        if not rtype:  # referrer enrichment off: only "was there one" is known
            rtype = "other" if (_s(c.page.get("referrer")) or _s(c.context.get("referrer"))) else "direct"
        out["channel"], out["source"], out["medium"] = self._touch_channel(
            out["utm_source"].strip().lower(), out["utm_medium"].strip().lower(), out["utm_campaign"],
            out["click_id_type"], rtype, out["referrer_name"], out["referrer_host"],
        )  # fmt: skip

    def _content_group(self, c: _Ctx, out: dict[str, Any]) -> None:
        assert self._groups is not None
        out["content_group"] = self._groups.group(out["page_path"] or self._page_of(c).path)

    def _user_agent(self, c: _Ctx, out: dict[str, Any]) -> None:
        assert self._ua is not None
        ua = _s(c.raw.get("user_agent")) or _s(c.context.get("userAgent"))
        if not ua:
            return
        info = self._ua.parse(ua[:2048])
        if self.settings.user_agent:
            (out["ua_browser"], out["ua_browser_version"], out["ua_os"], out["ua_os_version"],
             out["ua_device_type"], out["ua_device_brand"], out["ua_device_model"]) = info[:7]  # fmt: skip
        if info.is_bot:
            out["is_bot"] = True
            out["bot_name"] = info.bot_name
            out["ua_device_type"] = "bot"

    def _geo_step(self, c: _Ctx, out: dict[str, Any]) -> None:
        assert self._geo is not None
        ip = _s(c.raw.get("ip")) or _s(c.context.get("ip"))
        if not ip:
            return
        g = self._geo.lookup(ip)
        if g.country or g.org:
            (out["geo_country"], out["geo_region"], out["geo_city"], out["geo_lat"], out["geo_lon"],
             out["geo_timezone"], out["geo_asn"], out["geo_org"]) = g  # fmt: skip

    def _privacy(self, c: _Ctx, out: dict[str, Any]) -> None:
        """Runs after geo, so the lookup saw the full address and storage never does."""
        if c.site is not None and c.site.get("keep_full_ip"):
            return
        if ip := _s(c.raw.get("ip")):
            out["ip"] = truncate_ip(ip)
        if ctx_ip := _s(c.context.get("ip")):
            out["context"] = {**c.context, "ip": truncate_ip(ctx_ip)}

    def _contact_step(self, c: _Ctx, out: dict[str, Any]) -> None:
        assert self._contact is not None
        # a group call's traits describe the account (a company), not the person: only the person's
        # context.traits may fill contact fields then
        traits = {} if c.raw.get("type") == "group" else _d(c.raw.get("traits"))
        ctx_traits = _d(c.context.get("traits"))
        props = _d(c.raw.get("properties"))
        if not (traits or ctx_traits or props):
            return
        found = _find(traits, ctx_traits, props, c.raw.get("type") == "identify")
        if not found:
            return
        s = self.settings
        errors: list[str] = out["enrich_errors"]
        if s.email and (email := found.get("email")):
            try:
                e = self._contact.email(email[:320])
            except Exception as exc:
                errors.append(f"email: {type(exc).__name__}: {exc}"[:300])
            else:
                (out["email"], out["email_domain"], out["email_free"], out["email_disposable"],
                 out["company_domain"], out["company_name"]) = e  # fmt: skip
        if s.phone and (phone := found.get("phone")):
            try:
                p = self._contact.phone(phone[:64], out["geo_country"])
            except Exception as exc:
                errors.append(f"phone: {type(exc).__name__}: {exc}"[:300])
            else:
                (out["phone_e164"], out["phone_country"], out["phone_carrier"], out["phone_line_type"],
                 out["phone_timezone"]) = p  # fmt: skip
        if s.names:
            first, last = found.get("first", "").strip(), found.get("last", "").strip()
            if (not first or not last) and (full := found.get("full")):
                try:
                    f2, l2 = self._contact.name(full[:200])
                except Exception as exc:
                    errors.append(f"names: {type(exc).__name__}: {exc}"[:300])
                else:
                    first, last = first or f2, last or l2
            out["first_name"], out["last_name"] = first[:200], last[:200]

    def _company_lookup(self, c: _Ctx, out: dict[str, Any]) -> None:
        """Asks for a company profile (never waits for it): the work email's company domain and a
        ``website`` / ``domain`` trait (a group call's too: an account's domain)."""
        assert self.lookups is not None
        site_id = out["site_id"]
        if domain := out["company_domain"]:
            self.lookups.want(site_id, domain)
        raw_traits, ctx_traits = c.raw.get("traits"), c.context.get("traits")
        if not (raw_traits or ctx_traits):  # most events: nothing more to look at
            return
        for traits in (_d(raw_traits), _d(ctx_traits)):
            company = _d(traits.get("company"))
            for v in (traits.get("website"), traits.get("domain"), company.get("website"), company.get("domain")):
                if v and type(v) is str and (d := self._domains.company_domain(v[:500])):
                    self.lookups.want(site_id, d)


def _find(traits: dict[str, Any], ctx_traits: dict[str, Any], props: dict[str, Any], identify: bool) -> dict[str, str]:
    # A track event's properties.name is a person only when the same properties carry contact
    # data (a form submit); otherwise it is a product, plan or form name.
    found = find_contact(traits, ctx_traits) if (traits or ctx_traits) else {}
    if props and not identify:
        from_props = find_contact(props, allow_full_name=(False,))
        if "email" in from_props or "phone" in from_props:
            from_props = find_contact(props)
        for k, v in from_props.items():
            found.setdefault(k, v)
    return found


def _search_term(query: str, params: tuple[str, ...]) -> str:
    from urllib.parse import parse_qs

    qs = parse_qs(query)
    for p in params:
        if vals := qs.get(p):
            return vals[0].strip()[:500]
    return ""


__all__ = ["Enricher"]
