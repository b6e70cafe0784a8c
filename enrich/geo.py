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
import logging
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
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


log = logging.getLogger(__name__)

NO_GEO = GeoInfo()
_LOW64 = (1 << 64) - 1


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
        self._asn_fallback: AsnNames | None = None
        if fallback and self._db is None:
            import iptocc

            self._cc = iptocc.country_code
        if fallback and self._asn_db is None:
            self._asn_fallback = AsnNames.bundled()
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
            info = info._replace(org=self._asn_fallback(addr))
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


class AsnNames:
    """ASN organisation names by address, from geoip2fast's bundled ``geoip2fast-asn-ipv6.dat.gz``
    (GeoLite2 ASN networks, names only, no ASN numbers), held compactly.

    geoip2fast itself keeps the file as Python lists of Python ints (and as module globals, so
    they outlive its object): 104 MiB for 644k networks, in every process that enriches. Here the
    networks (first address, prefix length, name id) are typed arrays, IPv6 addresses as two
    64-bit halves, and the 72k names one string: no per-network Python object outlives the load,
    so the memory the file's lists took goes back. Looked up as geoip2fast does (the last network
    starting at or before the address), but only when the address is inside that network:
    geoip2fast checks an IPv4 address against IPv6 sizes when its file holds both, and so names
    the network before the address for about one address in eight that no network holds.
    """

    def __init__(self, networks: Iterable[tuple[int, int, int]], names: Sequence[str]) -> None:
        """``networks``: (first address as an int, prefix length, name id), sorted by address."""
        cleaned = ["" if n in ("<unknown>", "IANA.ORG") else n.replace("\n", " ") for n in names]
        self._names = "\n".join(cleaned)
        self._name_at = array("I", [0])
        for n in cleaned:
            self._name_at.append(self._name_at[-1] + len(n) + 1)
        self._v4, self._v4_len, self._v4_id = array("I"), array("B"), array("I")
        self._v6_hi, self._v6_lo, self._v6_len, self._v6_id = array("Q"), array("Q"), array("B"), array("I")
        for first, length, name in networks:
            if first < 1 << 32:
                self._v4.append(first)
                self._v4_len.append(length)
                self._v4_id.append(name)
            else:
                self._v6_hi.append(first >> 64)
                self._v6_lo.append(first & _LOW64)
                self._v6_len.append(length)
                self._v6_id.append(name)

    @classmethod
    def bundled(cls, data: Path | None = None) -> AsnNames | None:
        """From the installed geoip2fast's data file (or ``data``); None when geoip2fast is not
        installed, or its file is not in the format read here (a warning: no ``geo_org`` then, the
        rest of enrichment unchanged)."""
        import gzip
        import pickle
        from importlib.resources import files

        try:
            source = data or files("geoip2fast") / "geoip2fast-asn-ipv6.dat.gz"
        except ModuleNotFoundError:
            return None
        try:
            with gzip.open(str(source), "rb") as f:
                # the package's own file, read as geoip2fast reads it
                version, info, _, lists = pickle.load(f)  # noqa: S301
            if version not in (120, 121) or not (info.get("country") and info.get("asn")):
                raise ValueError(f"format {version!r} {dict(info, info='')!r}, not 120/121 with countries and ASNs")
            _, _, _, names, _, starts, _, ids, _, lengths = lists  # their lists of chunks, in this order
            del lists
            networks = (
                (first, length, name)
                for chunk_starts, chunk_lengths, chunk_ids in zip(starts, lengths, ids, strict=True)
                for first, length, name in zip(chunk_starts, chunk_lengths, chunk_ids, strict=True)
            )
            return cls(networks, names)
        except Exception as exc:  # a file of another geoip2fast version: enrichment goes on without
            log.warning("geoip2fast's ASN file %s cannot be read, no geo_org: %s", source, exc)
            return None

    def __call__(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """The organisation name of the network holding ``addr``; "" when none does."""
        ip = int(addr)
        if addr.version == 4:
            i = bisect_right(self._v4, ip) - 1
            if i < 0 or ip >= self._v4[i] + (1 << (32 - self._v4_len[i])):
                return ""
            return self._name(self._v4_id[i])
        hi, lo = ip >> 64, ip & _LOW64
        highs, lows = self._v6_hi, self._v6_lo
        i = bisect_right(highs, hi) - 1
        while i >= 0 and highs[i] == hi and lows[i] > lo:  # networks longer than /64 share a high half
            i -= 1
        if i < 0 or ip >= (highs[i] << 64 | lows[i]) + (1 << (128 - self._v6_len[i])):
            return ""
        return self._name(self._v6_id[i])

    def _name(self, name_id: int) -> str:
        return self._names[self._name_at[name_id] : self._name_at[name_id + 1] - 1]
