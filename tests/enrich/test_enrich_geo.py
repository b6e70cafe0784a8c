"""Geo: the shipped offline fallback on real public addresses, and the MaxMind-DB reader path."""

import ipaddress
from pathlib import Path

import pytest

from enrich import Enricher, EnrichSettings
from enrich.geo import AsnNames, GeoLookup, truncate_ip
from tests.enrich.helpers import page_event

# Facts stable for years: who the RIRs assigned these blocks to.
PUBLIC = [
    ("8.8.8.8", "US"),  # Google DNS
    ("2001:4860:4860::8888", "US"),  # Google DNS v6
    ("1.1.1.1", "AU"),  # APNIC/Cloudflare research block, registered in AU
    ("81.2.69.142", "GB"),  # Andrews & Arnold (MaxMind's own test address)
    ("85.214.132.117", "DE"),  # Strato, Berlin
    ("133.11.0.1", "JP"),  # University of Tokyo
    ("::ffff:8.8.4.4", "US"),  # IPv4-mapped IPv6 is unwrapped
]


@pytest.mark.parametrize(("ip", "country"), PUBLIC)
def test_fallback_country(enricher, ip, country):
    out = enricher.enrich(page_event(ip=ip))
    assert out["geo_country"] == country
    assert out["enrich_errors"] == []


def test_fallback_timezone_and_org(enricher):
    gb = enricher.enrich(page_event(ip="81.2.69.142"))
    assert gb["geo_timezone"] == "Europe/London"
    jp = enricher.enrich(page_event(ip="133.11.0.1"))
    assert jp["geo_timezone"] == "Asia/Tokyo"
    us = enricher.enrich(page_event(ip="8.8.8.8"))
    assert us["geo_timezone"] == ""  # the US spans many zones: no guess
    assert "GOOGLE" in us["geo_org"].upper()


def test_bundled_asn_names_only_inside_a_network():
    """The bundled ASN table names an address's own network, v4 and v6, and nothing for an address
    no network holds (geoip2fast itself names the network before it: 9.11.32.187 as Quad9's)."""
    names = AsnNames.bundled()
    assert names is not None
    assert names(ipaddress.ip_address("9.9.9.9")) == "QUAD9-AS-1"
    assert names(ipaddress.ip_address("2620:fe::fe")) == "QUAD9-AS-1"
    assert names(ipaddress.ip_address("2001:4860:4860::8888")) == "GOOGLE"
    assert names(ipaddress.ip_address("9.11.32.187")) == ""  # after 9.9.9.0/24, inside no network


def test_asn_file_of_another_format_gives_no_org_and_a_warning(tmp_path, caplog):
    """A geoip2fast file in a format this reader does not know (a newer geoip2fast) costs only
    ``geo_org``: a warning, no table, nothing raised."""
    import gzip
    import pickle

    def write(name: str, content: object) -> Path:
        path = tmp_path / name
        with gzip.open(path, "wb") as f:
            pickle.dump(content, f)
        return path

    flags = {"info": "", "country": True, "city": False, "asn": True, "ipv6": True}
    chunks = [[int(ipaddress.ip_address("10.0.0.0"))]], [[8]], [[1]]
    good = (120, flags, 1, ([], [], [], ["<unknown>", "TEN"], [], chunks[0], [], chunks[2], [], chunks[1]))
    names = AsnNames.bundled(write("good.dat.gz", good))
    assert names is not None and names(ipaddress.ip_address("10.1.2.3")) == "TEN"
    for bad in (
        (130, flags, 1, good[3]),  # a format number of the future
        (120, {**flags, "asn": False}, 1, good[3]),  # countries only
        (120, flags, 1, good[3][:8]),  # other lists
        (120, flags, 1, (*good[3][:9], [[8, 9]])),  # chunks that disagree
    ):
        caplog.clear()
        assert AsnNames.bundled(write("bad.dat.gz", bad)) is None
        assert "cannot be read, no geo_org" in caplog.text
    (tmp_path / "garbage.dat.gz").write_bytes(b"not gzip")
    assert AsnNames.bundled(tmp_path / "garbage.dat.gz") is None


def test_asn_names_prefix_bounds_and_long_v6_prefixes():
    """Containment at each network's edges; IPv6 networks longer than /64 that share a high half;
    the file's placeholder names are no name."""
    v6 = int(ipaddress.ip_address("2001:db8::"))
    networks = [
        (int(ipaddress.ip_address("10.0.0.0")), 8, 1),
        (int(ipaddress.ip_address("11.0.0.0")), 24, 2),
        (int(ipaddress.ip_address("12.0.0.0")), 16, 0),
        (v6, 64, 1),
        (v6 + (1 << 64), 80, 2),  # 2001:db8:0:1::/80
        (v6 + (1 << 64) + (1 << 60), 96, 1),  # 2001:db8:0:1:1000::/96, the same high half
    ]
    names = AsnNames(networks, ["<unknown>", "ONE", "TWO\nLINES"])
    at = ipaddress.ip_address
    assert [names(at(ip)) for ip in ("9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.255", "11.0.1.0")] == [
        "",
        "ONE",
        "ONE",
        "TWO LINES",
        "",
    ]
    assert names(at("12.0.3.4")) == ""  # <unknown>
    assert names(at("2001:db8::ffff")) == "ONE"
    assert names(at("2001:db8:0:1::5")) == "TWO LINES"
    assert names(at("2001:db8:0:1:1:0:0:0")) == ""  # past the /80, before the /96
    assert names(at("2001:db8:0:1:1000::7")) == "ONE"
    assert names(at("2001:db8:0:1:1000:1::")) == ""  # past the /96
    assert names(at("2001:db7::1")) == ""  # before every IPv6 network


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "192.168.0.10",
        "172.16.5.4",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "100.64.1.1",
        "fd00::5",
        "203.0.113.9",
        "not-an-ip",
        "",
    ],
)
def test_non_global_addresses_get_no_geo(enricher, ip):
    out = enricher.enrich(page_event(ip=ip))
    assert (out["geo_country"], out["geo_org"], out["geo_lat"]) == ("", "", 0.0)
    assert out["enrich_errors"] == []


@pytest.mark.parametrize(
    ("ip", "truncated"),
    [
        ("81.2.69.142", "81.2.69.0"),
        ("2a00:1450:4001:82b::200e", "2a00:1450:4001::"),
        ("::ffff:8.8.4.4", "8.8.4.0"),
        ("10.0.0.7", "10.0.0.0"),
    ],
)
def test_ip_truncated_after_lookup(enricher, ip, truncated):
    out = enricher.enrich(page_event(ip=ip))
    assert out["ip"] == truncated
    assert truncate_ip(ip) == truncated


def test_keep_full_ip_site(enricher):
    site = {"site_id": "site1", "write_key": "w", "read_key": "r", "origins": [], "keep_full_ip": True}
    out = enricher.enrich(page_event(ip="81.2.69.142"), site)
    assert out["ip"] == "81.2.69.142" and out["geo_country"] == "GB"


def test_raw_event_not_mutated(enricher):
    ev = page_event(ip="81.2.69.142")
    enricher.enrich(ev)
    assert ev["ip"] == "81.2.69.142" and "geo_country" not in ev


# --- the MaxMind DB reader path, on a database written here -------------------------------------

mmdb_writer = pytest.importorskip("mmdb_writer")


def _city_record(cc, city, region, lat, lon, tz):
    from mmdb_writer import MmdbF64

    return {
        "country": {"iso_code": cc, "names": {"en": cc}},
        "city": {"names": {"en": city, "de": city + "-de"}},
        "subdivisions": [{"iso_code": region[:3].upper(), "names": {"en": region}}],
        "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon), "time_zone": tz},
    }


@pytest.fixture(scope="module")
def city_mmdb(tmp_path_factory):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    path = tmp_path_factory.mktemp("mmdb") / "test-city.mmdb"
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"])
    w.insert_network(
        IPSet(["81.2.69.0/24"]), _city_record("GB", "London", "England", 51.5142, -0.0931, "Europe/London")
    )
    w.insert_network(IPSet(["2a02:ff0::/32"]), _city_record("IT", "Rome", "Lazio", 41.9, 12.5, "Europe/Rome"))
    w.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def asn_mmdb(tmp_path_factory):
    from mmdb_writer import MmdbU32, MMDBWriter
    from netaddr import IPSet

    path = tmp_path_factory.mktemp("mmdb") / "test-asn.mmdb"
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", languages=["en"])
    w.insert_network(
        IPSet(["81.2.64.0/18"]),
        {"autonomous_system_number": MmdbU32(20712), "autonomous_system_organization": "Andrews & Arnold Ltd"},
    )
    w.to_db_file(str(path))
    return path


def test_mmdb_city_and_asn(no_network, city_mmdb, asn_mmdb):
    e = Enricher(EnrichSettings(geo_db=city_mmdb, geo_asn_db=asn_mmdb))
    out = e.enrich(page_event(ip="81.2.69.142"))
    assert out["geo_country"] == "GB"
    assert out["geo_city"] == "London"
    assert out["geo_region"] == "England"
    assert out["geo_lat"] == pytest.approx(51.5142) and out["geo_lon"] == pytest.approx(-0.0931)
    assert out["geo_timezone"] == "Europe/London"
    assert (out["geo_asn"], out["geo_org"]) == (20712, "Andrews & Arnold Ltd")
    assert out["ip"] == "81.2.69.0"
    v6 = e.enrich(page_event(ip="2a02:ff0:1234::1"))
    assert (v6["geo_country"], v6["geo_city"], v6["geo_asn"]) == ("IT", "Rome", 0)


def test_mmdb_miss_is_empty_not_fallback(no_network, city_mmdb):
    # An address the user's database does not know stays unknown: we never mix sources silently.
    g = GeoLookup(city_mmdb, None, fallback=False)
    assert g.lookup("8.8.8.8").country == ""
    assert g.lookup("81.2.69.1").city == "London"
    assert ipaddress.ip_address("81.2.69.1").is_global


def test_missing_geo_db_fails_at_start(tmp_path):
    with pytest.raises(FileNotFoundError):
        Enricher(EnrichSettings(geo_db=tmp_path / "nope.mmdb"))
