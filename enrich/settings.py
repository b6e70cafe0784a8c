"""Enrichment settings: every enrichment can be switched off; data files are local paths only."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class EnrichSettings(BaseModel):
    user_agent: bool = True
    bots: bool = True
    referrer: bool = True
    campaign: bool = True
    geo: bool = True
    contact: bool = True
    geo_db: Path | None = None  # a MaxMind-format .mmdb (GeoLite2 / DB-IP lite) the user already has
    # --- added by the enrich stage ---
    page: bool = True  # page_url/host/path/query/title from context.page
    channel: bool = True  # GA4-style channel grouping (needs referrer and/or campaign)
    content_group: bool = True
    # (pattern, group): a glob on the page path (``/blog/*``) or a regex when prefixed ``re:``.
    # The first match wins.
    content_groups: list[tuple[str, str]] = []
    geo_fallback: bool = True  # use the offline database shipped in a PyPI package when geo_db is unset
    geo_asn_db: Path | None = None  # optional separate ASN .mmdb (GeoLite2-ASN); geo_db may carry ASN too
    truncate_ip: bool = True  # IPv4 /24, IPv6 /48 after lookup, unless the site sets keep_full_ip
    email: bool = True  # the contact parts can be switched separately
    phone: bool = True
    names: bool = True
    cache_size: int = 50000  # per-lookup LRU size (UA strings, IPs, referrer hosts)
