"""Key lookup for the collector: write keys identify a site; read and admin keys never write."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas import Site
from trailmark.keys import find_site, index_keys


@dataclass
class SiteKeys:
    """The sites by write key and read key, looked up in constant time (trailmark.keys.find_site)."""

    by_write_digest: dict[bytes, Site] = field(default_factory=dict)
    by_read_digest: dict[bytes, Site] = field(default_factory=dict)
    by_admin_digest: dict[bytes, Site] = field(default_factory=dict)

    @classmethod
    def of(cls, sites: Iterable[Site]) -> SiteKeys:
        sites = list(sites)
        return cls(index_keys(sites, "write_key"), index_keys(sites, "read_key"), index_keys(sites, "admin_key"))

    def by_write_key(self, key: object) -> Site | None:
        return find_site(self.by_write_digest, key)

    def other_kind(self, key: object) -> str | None:
        """``read`` or ``admin`` when ``key`` is one of a site's other keys (they never write)."""
        if find_site(self.by_read_digest, key) is not None:
            return "read"
        return "admin" if find_site(self.by_admin_digest, key) is not None else None

    def origin_allowed(self, site: Site, origin: str | None) -> bool:
        if origin is None:
            return True  # server-side clients and sendBeacon from the same origin send none
        allowed = site.get("origins") or ["*"]
        return "*" in allowed or origin in allowed


def basic_auth_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic header (Segment sends the write key as user name)."""
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None
