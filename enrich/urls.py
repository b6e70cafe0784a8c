"""Page, referrer and campaign fields from URLs.

Parsing uses ``urllib.parse.urlsplit`` (C-accelerated splitting, no normalisation surprises) and is
cached per referrer host / page query, because a site sees the same few of each again and again.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


class ClickId(NamedTuple):
    source: str  # the ad network, the session's source when nothing else names one
    medium: str  # the medium when utm_medium is absent ("" when organic links carry the id too)
    ads: str  # "search" | "social" | "display" | "": which paid channel the id proves


# Ad-platform click ids: the one list (the tracker sends the same names in context.campaign), in the
# order we prefer when several are present.
CLICK_ID_INFO: dict[str, ClickId] = {
    "gclid": ClickId("google", "cpc", "search"), "gbraid": ClickId("google", "cpc", "search"),
    "wbraid": ClickId("google", "cpc", "search"), "dclid": ClickId("google", "display", "display"),
    "msclkid": ClickId("bing", "cpc", "search"), "fbclid": ClickId("facebook", "", ""),
    "ttclid": ClickId("tiktok", "cpc", "social"), "li_fat_id": ClickId("linkedin", "cpc", "social"),
    "twclid": ClickId("twitter", "cpc", "social"),
}  # fmt: skip
CLICK_IDS = tuple(CLICK_ID_INFO)
# Parameters moved out of page_query into campaign fields (plus other pure tracking noise).
TRACKING_PARAMS = frozenset(
    (
        *UTM_KEYS,
        "utm_id",
        "utm_source_platform",
        "utm_creative_format",
        "utm_marketing_tactic",
        *CLICK_IDS,
        "_gl",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "igshid",
        "srsltid",
        "yclid",
    )
)


class SplitUrl(NamedTuple):
    url: str
    host: str
    path: str
    query: str


@lru_cache(maxsize=50000)
def split_url(url: str) -> SplitUrl:
    """Split a URL into lower-cased host, path and query (the raw URL is kept as given)."""
    if not url:
        return SplitUrl("", "", "", "")
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").rstrip(".")
    return SplitUrl(url, host, parts.path or ("/" if host else ""), parts.query)


class QueryInfo(NamedTuple):
    clean_query: str  # page query with tracking parameters removed
    utm: dict[str, str]
    click_id_type: str
    click_id: str


_EMPTY_QUERY = QueryInfo("", {}, "", "")


@lru_cache(maxsize=50000)
def parse_query(query: str) -> QueryInfo:
    """Pull UTM tags and click ids out of a query string; keep the rest as the page query."""
    if not query:
        return _EMPTY_QUERY
    pairs = parse_qsl(query, keep_blank_values=True)
    utm: dict[str, str] = {}
    clicks: dict[str, str] = {}
    kept: list[tuple[str, str]] = []
    for k, v in pairs:
        lk = k.lower()
        if lk in TRACKING_PARAMS:
            if lk in UTM_KEYS and lk not in utm and v:
                utm[lk] = v
            elif lk in CLICK_IDS and lk not in clicks and v:
                clicks[lk] = v
        else:
            kept.append((k, v))
    ctype = next((c for c in CLICK_IDS if c in clicks), "")
    clean = query if len(kept) == len(pairs) else urlencode(kept)
    return QueryInfo(clean, utm, ctype, clicks.get(ctype, ""))


def campaign_from_context(campaign: object) -> tuple[dict[str, str], str, str]:
    """UTM tags and the click id (type, value) of Segment's ``context.campaign``: ``name`` is the
    campaign, bare keys the other tags, click ids under their own names (as trailmark.js sends them)."""
    if not isinstance(campaign, dict):
        return {}, "", ""
    out: dict[str, str] = {}
    clicks: dict[str, str] = {}
    for key, val in campaign.items():
        if not val or not isinstance(val, str | int):
            continue
        k = str(key).lower()
        if k in CLICK_ID_INFO:
            clicks.setdefault(k, str(val))
            continue
        if k == "name":
            k = "campaign"
        if not k.startswith("utm_"):
            k = "utm_" + k
        if k in UTM_KEYS:
            out[k] = str(val)
    ctype = next((c for c in CLICK_IDS if c in clicks), "")
    return out, ctype, clicks.get(ctype, "")
