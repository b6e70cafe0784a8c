"""A company's home page -> profile fields, with extruct for the structured data.

schema.org ``Organization`` and its subtypes (JSON-LD, ``@graph`` included, and microdata) give the
name, legal name, logo, address and country, founding date, employees and ``sameAs``; OpenGraph gives
the site name and image when no Organization does; the page itself its title, meta description, icon,
language and links to the company's public profiles. The first source to give a field wins, in that
order, so structured data beats guesses.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit

_ORG_TYPES = frozenset(
    {
        "Organization",
        "Corporation",
        "LocalBusiness",
        "OnlineBusiness",
        "OnlineStore",
        "NGO",
        "NewsMediaOrganization",
        "EducationalOrganization",
        "GovernmentOrganization",
        "MedicalOrganization",
        "SportsOrganization",
        "Store",
        "ProfessionalService",
        "FinancialService",
        "Airline",
        "Consortium",
        "Cooperative",
        "FundingScheme",
        "LibrarySystem",
        "PerformingGroup",
        "ResearchOrganization",
        "WorkersUnion",
        "SearchRescueOrganization",
        "PoliticalParty",
    }
)
# host (without www.) -> profile field; a path is needed (a bare https://github.com/ is a share button)
SOCIAL_HOSTS = {
    "linkedin.com": "linkedin",
    "twitter.com": "twitter",
    "x.com": "twitter",
    "github.com": "github",
    "facebook.com": "facebook",
    "youtube.com": "youtube",
    "instagram.com": "instagram",
}
_SHARE = re.compile(r"/(share|sharer|intent|shareArticle)\b", re.I)
_WS = re.compile(r"\s+")


def _text(v: Any, limit: int = 500) -> str:
    if isinstance(v, list):
        v = next((x for x in v if isinstance(x, str | dict)), "")
    if isinstance(v, dict):
        v = v.get("name") or v.get("@value") or v.get("url") or v.get("@id") or ""
    if isinstance(v, int | float) and not isinstance(v, bool):
        v = str(v)
    return _WS.sub(" ", v).strip()[:limit] if isinstance(v, str) else ""


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("@type", ())
    names = [t] if isinstance(t, str) else [x for x in t if isinstance(x, str)] if isinstance(t, list) else []
    return {n.rsplit("/", 1)[-1] for n in names}


def _nodes(items: list[Any]) -> list[dict[str, Any]]:
    """Every object of the JSON-LD / microdata items, ``@graph`` flattened."""
    out: list[dict[str, Any]] = []
    stack = list(items)
    while stack:
        x = stack.pop(0)
        if isinstance(x, list):
            stack[:0] = x
        elif isinstance(x, dict):
            out.append(x)
            if isinstance(x.get("@graph"), list):
                stack[:0] = x["@graph"]
    return out


def social_field(url: str) -> str:
    """The profile field a link is, or '' (not a profile, or a share button)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = (parts.hostname or "").removeprefix("www.").removeprefix("m.")
    field = SOCIAL_HOSTS.get(host, "")
    if not field or parts.path.strip("/") == "" or _SHARE.search(parts.path):
        return ""
    return field


def _address(v: Any) -> tuple[str, str]:
    """(one-line address, country) of a PostalAddress (or a plain string)."""
    if isinstance(v, list):
        v = next((x for x in v if isinstance(x, dict | str)), "")
    if isinstance(v, str):
        return _text(v), ""
    if not isinstance(v, dict):
        return "", ""
    parts = [_text(v.get(k)) for k in ("streetAddress", "postalCode", "addressLocality", "addressRegion")]
    country = _text(v.get("addressCountry"), 60)
    line = ", ".join(p for p in [*parts, country] if p)
    return line, country


def _employees(v: Any) -> str:
    if isinstance(v, list):
        v = v[0] if v else ""
    if isinstance(v, dict):
        if "value" in v:
            return _text(v["value"], 40)
        lo, hi = _text(v.get("minValue"), 20), _text(v.get("maxValue"), 20)
        return f"{lo}-{hi}" if lo and hi else lo or hi
    return _text(v, 40)


def parse_page(html: str, url: str) -> dict[str, Any]:
    """Profile fields found on one page (only the ones found). ``same_as`` is a list."""
    import extruct
    import lxml.html

    found: dict[str, Any] = {}

    def put(field: str, value: Any) -> None:
        if value and field not in found:
            found[field] = value

    data = extruct.extract(
        html, base_url=url, syntaxes=["json-ld", "microdata", "opengraph"], uniform=True, errors="ignore"
    )
    orgs = [n for n in _nodes(data.get("json-ld", []) + data.get("microdata", [])) if _types(n) & _ORG_TYPES]
    same_as: list[str] = []
    for org in orgs:
        put("name", _text(org.get("name"), 200))
        put("legal_name", _text(org.get("legalName"), 200))
        put("description", _text(org.get("description"), 1000))
        logo = _text(org.get("logo"), 1000)
        put("logo", urljoin(url, logo) if logo else "")
        address, country = _address(org.get("address"))
        put("address", address)
        put("country", country)
        put("founded", _text(org.get("foundingDate"), 40))
        put("employees", _employees(org.get("numberOfEmployees")))
        s = org.get("sameAs")
        for link in [s] if isinstance(s, str) else s if isinstance(s, list) else []:
            if isinstance(link, str) and link.startswith(("http://", "https://")) and link not in same_as:
                same_as.append(link[:500])
    put("same_as", same_as[:50])
    for og in data.get("opengraph", []):
        if isinstance(og, dict):
            put("name", _text(og.get("og:site_name"), 200))
            image = _text(og.get("og:image"), 1000)
            put("logo", urljoin(url, image) if image else "")
            put("description", _text(og.get("og:description"), 1000))

    try:
        doc = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return found
    title = doc.findtext(".//title") or ""
    put("name", _text(title, 200))  # the last resort for a name
    for meta in doc.iterfind(".//meta[@name]"):
        if (meta.get("name") or "").lower() == "description":
            put("description", _text(meta.get("content"), 1000))
    put("language", (doc.get("lang") or "").strip()[:20])
    for link in doc.iterfind(".//link[@rel][@href]"):
        rels = (link.get("rel") or "").lower().split()
        if "icon" in rels or "apple-touch-icon" in rels:
            put("icon", urljoin(url, link.get("href") or "")[:1000])
    for a in doc.iterfind(".//a[@href]"):
        href = urljoin(url, a.get("href") or "")
        if field := social_field(href):
            put(field, href[:500])
    for link in same_as:
        if field := social_field(link):
            put(field, link)
    return found


__all__ = ["SOCIAL_HOSTS", "parse_page", "social_field"]
