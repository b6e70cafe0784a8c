"""Geo from IP: a MaxMind-format database when configured, else an offline country table.

* ``settings.geo_db`` (and optionally ``geo_asn_db``): any MaxMind DB file - GeoLite2/GeoIP2
  City/Country/ASN or DB-IP lite - read with ``maxminddb`` (C extension, memory-mapped).
* Fallback: ``iptocc`` (country from the five RIRs' delegation files, refreshed nightly, embedded
  in its wheel, ~0.3 us/lookup) plus, when ``geoip2fast`` is installed, its ASN organisation names.
  See enrich/README.md for why.
Non-global addresses (private, loopback, link-local, CGNAT...) never get geo.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple


class GeoInfo(NamedTuple):
    country: str = ""
    region: str = ""
    city: str = ""
    lat: float = 0.0
    lon: float = 0.0
    timezone: str = ""
    asn: int = 0
    org: str = ""


NO_GEO = GeoInfo()


def parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse an address, unwrapping IPv4-mapped IPv6 (``::ffff:8.8.8.8``); None if invalid."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=100000)
def truncate_ip(ip: str) -> str:
    """Keep the network part only: IPv4 /24, IPv6 /48 (the usual analytics anonymisation)."""
    addr = parse_ip(ip)
    if addr is None:
        return ""
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


def _country_timezones() -> dict[str, str]:
    """Country -> one time zone, only where that is unambiguous (from tzdata's zone tables).

    zone.tab gives countries with a single zone (GB, JP, IE ...); for the rest, zone1970.tab's
    "zone whose first-listed country is cc" rescues countries like DE (Berlin; Busingen is Zurich's).
    Countries spanning several zones (US, RU, BR ...) get none: a guess would be wrong for most.
    """
    from importlib.resources import files

    def table(name: str) -> list[list[str]]:
        try:
            text = (files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")
        except Exception:
            return []
        return [ln.split("\t") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]

    single: dict[str, list[str]] = {}
    for cols in table("zone.tab"):
        if len(cols) >= 3:
            single.setdefault(cols[0], []).append(cols[2])
    first: dict[str, list[str]] = {}
    for cols in table("zone1970.tab"):
        if len(cols) >= 3:
            first.setdefault(cols[0].split(",")[0], []).append(cols[2])
    out = {cc: z[0] for cc, z in first.items() if len(z) == 1}
    out.update({cc: z[0] for cc, z in single.items() if len(z) == 1})
    return out


def _name(rec: Any) -> str:
    if isinstance(rec, dict):
        names = rec.get("names")
        if isinstance(names, dict):
            return str(names.get("en") or next(iter(names.values()), ""))
    return ""


class GeoLookup:
    """Resolves an IP to GeoInfo; one instance per Enricher, results cached per IP."""

    def __init__(
        self,
        db: Path | None = None,
        asn_db: Path | None = None,
        fallback: bool = True,
        cache_size: int = 50000,
    ) -> None:
        import maxminddb

        self._db = maxminddb.open_database(str(db), maxminddb.MODE_AUTO) if db else None
        self._asn_db = maxminddb.open_database(str(asn_db), maxminddb.MODE_AUTO) if asn_db else None
        self._cc: Any = None
        self._asn_fallback: Any = None
        if fallback and self._db is None:
            import iptocc

            self._cc = iptocc.country_code
        if fallback and self._asn_db is None:
            self._asn_fallback = _load_geoip2fast_asn()
        self._tz = _country_timezones()
        self.source = (f"mmdb:{Path(db).name}" if db else ("iptocc" if self._cc else "none")) + (
            "+geoip2fast-asn" if self._asn_fallback is not None else ""
        )
        self.lookup = lru_cache(maxsize=cache_size)(self._lookup)

    def _lookup(self, ip: str) -> GeoInfo:
        addr = parse_ip(ip)
        if addr is None or not addr.is_global:
            return NO_GEO
        text = str(addr)
        if self._db is not None:
            info = self._from_mmdb(self._db.get(text))
        elif self._cc is not None:
            cc = self._cc(text) or ""
            info = GeoInfo(country=cc, timezone=self._tz.get(cc, ""))
        else:
            info = NO_GEO
        if self._asn_db is not None:
            rec: Any = self._asn_db.get(text)
            if isinstance(rec, dict):
                info = info._replace(
                    asn=int(rec.get("autonomous_system_number") or 0),
                    org=str(rec.get("autonomous_system_organization") or ""),
                )
        elif not info.org and self._asn_fallback is not None:
            info = info._replace(org=self._asn_fallback(text))
        return info

    def _from_mmdb(self, rec: Any) -> GeoInfo:
        if not isinstance(rec, dict):
            return NO_GEO
        country = rec.get("country") or rec.get("registered_country") or {}
        cc = str(country.get("iso_code") or "") if isinstance(country, dict) else ""
        subs = rec.get("subdivisions")
        region = ""
        if isinstance(subs, list) and subs and isinstance(subs[0], dict):
            region = _name(subs[0]) or str(subs[0].get("iso_code") or "")
        loc_rec = rec.get("location")
        loc: dict[str, Any] = loc_rec if isinstance(loc_rec, dict) else {}
        tz = str(loc.get("time_zone") or "") or self._tz.get(cc, "")
        return GeoInfo(
            country=cc,
            region=region,
            city=_name(rec.get("city")),
            lat=float(loc.get("latitude") or 0.0),
            lon=float(loc.get("longitude") or 0.0),
            timezone=tz,
            asn=int(rec.get("autonomous_system_number") or 0),
            org=str(rec.get("autonomous_system_organization") or rec.get("isp") or ""),
        )


def _load_geoip2fast_asn() -> Any:
    """ASN organisation names from geoip2fast's bundled data (no ASN numbers in that file)."""
    try:
        from geoip2fast import GeoIP2Fast
    except ImportError:
        return None
    g = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn-ipv6.dat.gz", verbose=False)

    def org(ip: str) -> str:
        r = g.lookup(ip)
        name = getattr(r, "asn_name", "") or ""
        return "" if name in ("IANA.ORG", "<not found in database>") else str(name)

    return org
