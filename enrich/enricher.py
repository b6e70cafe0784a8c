"""The Enricher: RawEvent -> EnrichedEvent, one pass, each enrichment isolated.

Parsers and data files load once in ``__init__``; ``enrich`` is a plain function of the event so the
stage runner can call it from any loop. An exception inside one enrichment is recorded in
``enrich_errors`` and the event goes on; only a record that is not an event at all is poison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from enrich.channels import Touch, channel_for
from enrich.errors import PoisonEvent
from enrich.referrers import VIDEO_SITES, ReferrerClassifier, is_shopping
from enrich.settings import EnrichSettings
from enrich.urls import campaign_from_context, parse_query, split_url
from schemas.events import ENRICHED_DEFAULTS, EnrichedEvent, RawEvent, Site

_DEFAULTS = {k: v for k, v in ENRICHED_DEFAULTS.items() if k != "enrich_errors"}
# Click ids that tell the source even when the referrer was stripped (in-app browsers, https->http).
_CLICK_SOURCE = {
    "gclid": "google", "gbraid": "google", "wbraid": "google", "dclid": "google",
    "msclkid": "bing", "fbclid": "facebook", "ttclid": "tiktok", "li_fat_id": "linkedin", "twclid": "twitter",
}

Step = Callable[[dict[str, Any], dict[str, Any], Site | None], None]


def _dict(v: object) -> dict[str, Any]:
    return cast(dict[str, Any], v) if isinstance(v, dict) else {}


def _str(v: object) -> str:
    return v if isinstance(v, str) else ""


class Enricher:
    """Loads every enabled parser/database once; ``enrich`` then costs microseconds per event."""

    def __init__(self, settings: EnrichSettings | None = None) -> None:
        self.settings = s = settings or EnrichSettings()
        self._refs = ReferrerClassifier(s.cache_size) if (s.referrer or s.channel) else None
        self._ua = None
        if s.user_agent or s.bots:
            from enrich.useragent import UserAgentParser

            self._ua = UserAgentParser(detect_bots=s.bots, cache_size=s.cache_size)
        self._geo = None
        if s.geo:
            from enrich.geo import GeoLookup

            self._geo = GeoLookup(s.geo_db, s.geo_asn_db, s.geo_fallback, s.cache_size)
        self._contact = None
        if s.contact and (s.email or s.phone or s.names):
            from enrich.contact import ContactParser

            self._contact = ContactParser(s.cache_size)
        self._groups = None
        if s.content_group and s.content_groups:
            from enrich.content import ContentGrouper

            self._groups = ContentGrouper(s.content_groups, s.cache_size)
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
        self._steps = steps

    # -- public -------------------------------------------------------------------------------
    def enrich(self, raw: RawEvent, site: Site | None = None) -> EnrichedEvent:
        if not isinstance(raw, dict):
            raise PoisonEvent(f"event is not an object: {type(raw).__name__}")
        site_id = raw.get("site_id")
        if not site_id or not isinstance(site_id, str):
            raise PoisonEvent("event has no site_id")
        src = cast(dict[str, Any], raw)
        out: dict[str, Any] = {**src, **_DEFAULTS}
        errors: list[str] = []
        out["enrich_errors"] = errors
        for name, step in self._steps:
            try:
                step(src, out, site)
            except Exception as exc:  # one failing enrichment must never drop the event
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        return cast(EnrichedEvent, out)

    # -- steps --------------------------------------------------------------------------------
    @staticmethod
    def _page_ctx(raw: dict[str, Any]) -> dict[str, Any]:
        page = _dict(_dict(raw.get("context")).get("page"))
        if not page and raw.get("type") == "page":
            page = _dict(raw.get("properties"))  # Segment page() puts url/title in properties
        return page

    def _page(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        page = self._page_ctx(raw)
        url = _str(page.get("url"))
        parts = split_url(url)
        out["page_url"] = url
        out["page_host"] = parts.host
        out["page_path"] = parts.path or _str(page.get("path"))
        query = parts.query or _str(page.get("search")).removeprefix("?")
        out["page_query"] = parse_query(query).clean_query if self.settings.campaign else query
        out["page_title"] = _str(page.get("title"))
        if not out["page_path"] and raw.get("type") == "screen":
            out["page_path"] = _str(raw.get("event"))

    def _campaign(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        page = self._page_ctx(raw)
        query = split_url(_str(page.get("url"))).query or _str(page.get("search")).removeprefix("?")
        q = parse_query(query)
        tags = campaign_from_context(_dict(raw.get("context")).get("campaign"))
        for key, val in q.utm.items():
            tags.setdefault(key, val)
        for key, val in tags.items():
            out[key] = val[:1000]
        out["click_id_type"] = q.click_id_type
        out["click_id"] = q.click_id[:500]

    def _referrer(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        assert self._refs is not None
        page = self._page_ctx(raw)
        ref_url = _str(page.get("referrer")) or _str(_dict(raw.get("context")).get("referrer"))
        out["referrer"] = ref_url
        if not ref_url:
            out["referrer_type"] = "direct"
            return
        ref = split_url(ref_url)
        out["referrer_host"] = ref.host
        page_host = out["page_host"] or split_url(_str(page.get("url"))).host
        if not ref.host:
            out["referrer_type"] = "other"
            return
        if page_host and (
            ref.host == page_host
            or self._refs.registered_domain(ref.host) == self._refs.registered_domain(page_host)
        ):
            out["referrer_type"] = "internal"
            return
        known = self._refs.host(ref.host)
        if known is None:
            out["referrer_type"] = "other"
            return
        out["referrer_type"] = known.type
        out["referrer_name"] = known.name
        if known.params and ref.query:
            out["search_term"] = _search_term(ref.query, known.params)

    def _channel(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        assert self._refs is not None
        source = out["utm_source"].strip().lower()
        medium = out["utm_medium"].strip().lower()
        ctype = out["click_id_type"]
        rtype = out["referrer_type"]
        if not rtype and not self.settings.referrer:
            rtype = "other" if _str(self._page_ctx(raw).get("referrer")) else "direct"
        tagged = bool(source or medium or out["utm_campaign"] or ctype)
        known = self._refs.source(source) if source else None
        if not source:
            if out["referrer_name"]:
                source = out["referrer_name"].lower()
                known = self._refs.source(source)
            elif ctype:
                source = _CLICK_SOURCE.get(ctype, "")
                known = self._refs.source(source)
            elif rtype not in ("direct", "internal"):
                source = out["referrer_host"]
        if not medium and rtype not in ("direct", "internal") and not (tagged and not out["referrer_host"]):
            medium = {"search": "organic", "social": "social", "email": "email"}.get(rtype, "referral")
        category = ""
        if known is not None:
            category = "video" if known.name in VIDEO_SITES else known.type
            if category == "other":
                category = ""
        if not category and is_shopping(source):
            category = "shopping"
        touch = Touch(source, medium, out["utm_campaign"].lower(), category, ctype, tagged, rtype)
        out["channel"] = channel_for(touch)

    def _content_group(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        assert self._groups is not None
        out["content_group"] = self._groups.group(out["page_path"])

    def _user_agent(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        assert self._ua is not None
        ua = _str(raw.get("user_agent")) or _str(_dict(raw.get("context")).get("userAgent"))
        if not ua:
            return
        info = self._ua.parse(ua[:2048])
        if self.settings.user_agent:
            out["ua_browser"] = info.browser
            out["ua_browser_version"] = info.browser_version
            out["ua_os"] = info.os
            out["ua_os_version"] = info.os_version
            out["ua_device_type"] = info.device_type
            out["ua_device_brand"] = info.device_brand
            out["ua_device_model"] = info.device_model
        if info.is_bot:
            out["is_bot"] = True
            out["bot_name"] = info.bot_name
            out["ua_device_type"] = "bot"

    def _geo_step(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        assert self._geo is not None
        ip = _str(raw.get("ip")) or _str(_dict(raw.get("context")).get("ip"))
        if not ip:
            return
        g = self._geo.lookup(ip)
        if g.country or g.org:
            out["geo_country"] = g.country
            out["geo_region"] = g.region
            out["geo_city"] = g.city
            out["geo_lat"] = g.lat
            out["geo_lon"] = g.lon
            out["geo_timezone"] = g.timezone
            out["geo_asn"] = g.asn
            out["geo_org"] = g.org

    def _privacy(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        """Runs after geo, so the lookup saw the full address and storage never does."""
        if site is not None and site.get("keep_full_ip"):
            return
        from enrich.geo import truncate_ip

        if ip := _str(raw.get("ip")):
            out["ip"] = truncate_ip(ip)
        ctx = _dict(raw.get("context"))
        if _str(ctx.get("ip")):
            out["context"] = {**ctx, "ip": truncate_ip(_str(ctx["ip"]))}

    def _contact_step(self, raw: dict[str, Any], out: dict[str, Any], site: Site | None) -> None:
        assert self._contact is not None
        s = self.settings
        traits = _dict(raw.get("traits"))
        ctx_traits = _dict(_dict(raw.get("context")).get("traits"))
        props = _dict(raw.get("properties"))
        if not (traits or ctx_traits or props):
            return
        found = self._find(traits, ctx_traits, props, raw.get("type") == "identify")
        if not found:
            return
        errors: list[str] = out["enrich_errors"]
        if s.email and (email := found.get("email")):
            try:
                e = self._contact.email(email[:320])
            except Exception as exc:
                errors.append(f"email: {type(exc).__name__}: {exc}"[:300])
            else:
                out["email"], out["email_domain"] = e.email, e.domain
                out["email_free"], out["email_disposable"] = e.free, e.disposable
                out["company_domain"], out["company_name"] = e.company_domain, e.company_name
        if s.phone and (phone := found.get("phone")):
            try:
                p = self._contact.phone(phone[:64], out["geo_country"])
            except Exception as exc:
                errors.append(f"phone: {type(exc).__name__}: {exc}"[:300])
            else:
                out["phone_e164"], out["phone_country"] = p.e164, p.country
                out["phone_carrier"], out["phone_line_type"] = p.carrier, p.line_type
                out["phone_timezone"] = p.timezone
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

    @staticmethod
    def _find(
        traits: dict[str, Any], ctx_traits: dict[str, Any], props: dict[str, Any], identify: bool
    ) -> dict[str, str]:
        from enrich.contact import find_contact

        # A track event's properties.name is a person only when the same properties carry contact
        # data (a form submit); otherwise it is a product, plan or form name.
        found = find_contact(traits, ctx_traits)
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
