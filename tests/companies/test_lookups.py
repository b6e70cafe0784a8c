"""Company lookups against fixture sites on loopback (HTTP, DNS, RDAP), stored in real chDB: the
profile fields and their provenance per source, the SSRF guard on every hop, robots.txt, timeouts,
the size cap, non-HTML, retries, refresh age, and the contact view."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.companies.helpers import profiles, run, settings
from tests.companies.sites import BIG_BYTES, Sites
from trailmark.storage.chdb_backend import ChdbStorage


async def test_json_ld_dns_and_rdap_fill_a_profile_with_the_source_of_every_field(
    sites: Sites, chdb: ChdbStorage
) -> None:
    before = len(sites.record.paths("acme-jsonld.example"))
    await run(settings(sites), chdb, [("s1", "acme-jsonld.example"), ("s2", "acme-jsonld.example")])
    rows = profiles(chdb, "acme-jsonld.example")
    assert [r["site_id"] for r in rows] == ["s1", "s2"]  # a row per site that asked
    assert sites.record.paths("acme-jsonld.example")[before:] == ["/robots.txt", "/"]  # looked up once
    p = rows[0]
    home = f"http://acme-jsonld.example:{sites.port}/"
    assert p["status"] == "ok", p["reason"]
    assert (p["name"], p["legal_name"]) == ("Acme Widgets", "Acme Widgets GmbH")  # the Corporation, not the WebSite
    assert p["logo"] == f"http://acme-jsonld.example:{sites.port}/logo.png"
    assert (p["country"], p["address"]) == ("DE", "Hauptstr. 1, 10115, Berlin, DE")
    assert (p["founded"], p["employees"]) == ("1999-04-01", "11-50")
    assert p["same_as"] == ["https://www.linkedin.com/company/acme-widgets", "https://x.com/acmewidgets"]
    assert p["linkedin"] == "https://www.linkedin.com/company/acme-widgets"
    assert p["twitter"] == "https://x.com/acmewidgets"
    assert p["github"] == "https://github.com/acme-widgets"
    assert p["facebook"] == ""  # a share button is not the company's profile
    assert (p["language"], p["description"]) == ("de", "Widgets since 1999")
    assert p["icon"] == f"http://acme-jsonld.example:{sites.port}/favicon.ico"
    assert p["mail_provider"] == "Google Workspace"
    assert p["mx"] == ["aspmx.l.google.com", "alt1.aspmx.l.google.com"]
    assert p["technologies"] == ["Google Search Console", "Google Workspace", "SendGrid", "Atlassian", "Microsoft 365"]
    assert p["registered_at"].startswith("2001-02-03 04:05:06")
    src = p["field_sources"]
    assert src["name"] == src["logo"] == src["country"] == src["github"] == home
    assert src["mail_provider"] == "dns:MX acme-jsonld.example"
    assert src["technologies"] == "dns:TXT acme-jsonld.example"
    assert src["registered_at"] == f"rdap:http://rdap.example:{sites.port}/domain/acme-jsonld.example"
    ua = [h["user-agent"] for host, _, h in sites.record.requests if host == "acme-jsonld.example"]
    assert ua and all("trailmark" in u for u in ua)


async def test_microdata_and_opengraph_only_sites(sites: Sites, chdb: ChdbStorage) -> None:
    await run(settings(sites), chdb, [("s1", "acme-micro.example"), ("s1", "acme-og.example")])
    (m,) = profiles(chdb, "acme-micro.example")
    assert (m["name"], m["logo"], m["country"], m["founded"]) == (
        "Micro Data Ltd", "https://cdn.micro.example/logo.svg", "GB", "2011",
    )  # fmt: skip
    assert m["address"] == "London, GB"
    assert m["mail_provider"] == "self-hosted"  # MX under the domain itself
    assert m["technologies"] == ["Stripe"]
    assert m["registered_at"].startswith("1970-01-01")  # the registry does not know it
    assert "rdap" in m["reason"] and "404" in m["reason"]
    (o,) = profiles(chdb, "acme-og.example")
    assert (o["name"], o["logo"]) == ("Open Graph SA", f"http://acme-og.example:{sites.port}/og.png")
    assert (o["description"], o["language"]) == ("Seulement OpenGraph", "fr")
    assert o["icon"] == f"http://acme-og.example:{sites.port}/fav.png"
    assert (o["youtube"], o["instagram"], o["twitter"]) == (
        "https://www.youtube.com/@ogonly", "https://www.instagram.com/ogonly/", "",
    )  # fmt: skip
    assert o["mail_provider"] == "Microsoft 365"


async def test_a_redirect_chain_is_followed_hop_by_hop_without_cookies(sites: Sites, chdb: ChdbStorage) -> None:
    await run(settings(sites, dns=False, rdap=False), chdb, [("s1", "redirect.example")])
    (p,) = profiles(chdb, "redirect.example")
    final = f"http://final.example:{sites.port}/home"
    assert (p["status"], p["name"]) == ("ok", "Final Hop Inc")
    assert p["field_sources"]["name"] == final  # provenance: where the field really came from
    step = [h for host, path, h in sites.record.requests if (host, path) == ("redirect.example", "/step")]
    assert step and "cookie" not in step[-1]  # the Set-Cookie of the first hop is not sent back
    assert "final.example" in [host for host, path, _ in sites.record.requests if path == "/robots.txt"]


@pytest.mark.parametrize(
    ("domain", "refused"),
    [
        ("private.example", "127.0.0.2 is not a public address"),  # the name resolves to another loopback
        ("metadata.example", "169.254.169.254 is not a public address"),  # cloud metadata
        ("tennet.example", "10.0.0.1 is not a public address"),  # private network, as an IP literal
    ],
)
async def test_a_redirect_to_a_private_address_is_refused_before_connecting(
    sites: Sites, chdb: ChdbStorage, domain: str, refused: str
) -> None:
    hits = sites.record.internal_hits
    await run(settings(sites, dns=False, rdap=False), chdb, [("s1", domain)])
    (p,) = profiles(chdb, domain)
    assert p["status"] == "refused"
    assert refused in p["reason"]
    assert p["name"] == ""
    assert sites.record.internal_hits == hits


async def test_the_internal_service_is_reachable_when_allowed_so_the_refusal_above_is_the_guard(
    sites: Sites, chdb: ChdbStorage
) -> None:
    hits = sites.record.internal_hits
    cfg = settings(sites, dns=False, rdap=False, allow_private_targets=["127.0.0.0/8"])
    await run(cfg, chdb, [("s1", "private.example")])
    (p,) = profiles(chdb, "private.example")
    assert p["name"] == "INTERNAL SECRET"
    assert sites.record.internal_hits > hits


async def test_loopback_itself_is_refused_by_default(sites: Sites, chdb: ChdbStorage) -> None:
    n = len(sites.record.requests)
    await run(settings(sites, allow_private_targets=[], dns=False), chdb, [("s1", "acme-og.example")])
    (p,) = profiles(chdb, "acme-og.example")
    assert p["status"] == "refused"
    assert "127.0.0.1 is not a public address" in p["reason"]
    assert len(sites.record.requests) == n  # no request reached the fixture server (RDAP neither)


@pytest.mark.parametrize("domain", ["robots.example", "robots-ua.example"])
async def test_robots_txt_is_respected(sites: Sites, chdb: ChdbStorage, domain: str) -> None:
    before = len(sites.record.paths(domain))
    await run(settings(sites, dns=False, rdap=False), chdb, [("s1", domain)])
    (p,) = profiles(chdb, domain)
    assert p["status"] == "refused"
    assert "robots.txt" in p["reason"]
    assert sites.record.paths(domain)[before:] == ["/robots.txt"]  # the page itself was never asked for


async def test_a_slow_site_times_out_and_is_stored_as_an_error(sites: Sites, chdb: ChdbStorage) -> None:
    sites.slow_s = 4.0
    before = len(sites.record.paths("slow.example"))
    started = time.monotonic()
    await run(settings(sites, dns=False, rdap=False, timeout_s=0.5, retries=1), chdb, [("s1", "slow.example")])
    took = time.monotonic() - started
    (p,) = profiles(chdb, "slow.example")
    assert p["status"] == "error"
    assert "no answer within 0.5 s" in p["reason"] or "timed out" in p["reason"]
    assert took < 3.5  # two attempts of 0.5 s and a backoff, not the site's 4 s
    assert sites.record.paths("slow.example")[before:].count("/") == 2  # retried once


async def test_a_20_mb_page_is_read_up_to_the_cap_only(sites: Sites, chdb: ChdbStorage) -> None:
    await run(settings(sites, dns=False, rdap=False, max_bytes=256 * 1024), chdb, [("s1", "big.example")])
    (p,) = profiles(chdb, "big.example")
    assert (p["status"], p["name"]) == ("ok", "Big Page Co")  # parsed from what was read
    assert "read up to 262144 bytes only" in p["reason"]
    await asyncio.sleep(0.5)
    # the download was dropped, not read to its end (loopback socket buffers hold a few MB more)
    assert 0 < sites.record.big_sent < BIG_BYTES // 2


async def test_non_html_gives_no_fields(sites: Sites, chdb: ChdbStorage) -> None:
    await run(settings(sites, dns=False, rdap=False), chdb, [("s1", "pdf.example")])
    (p,) = profiles(chdb, "pdf.example")
    assert p["status"] == "not_found"
    assert "is not HTML (application/pdf)" in p["reason"]


async def test_an_unknown_domain_is_not_found_and_a_503_is_retried(sites: Sites, chdb: ChdbStorage) -> None:
    await run(settings(sites), chdb, [("s1", "nx-company.example"), ("s1", "flaky.example")])
    (nx,) = profiles(chdb, "nx-company.example")
    assert nx["status"] == "not_found"
    assert "no address" in nx["reason"] and "no such domain" in nx["reason"]
    (flaky,) = profiles(chdb, "flaky.example")
    assert (flaky["status"], flaky["name"]) == ("ok", "Flaky Co")


async def test_a_fresh_profile_is_not_fetched_again_and_is_copied_for_another_site(
    sites: Sites, chdb: ChdbStorage
) -> None:
    cfg = settings(sites)
    await run(cfg, chdb, [("s1", "acme-micro.example")])
    n = len(sites.record.paths("acme-micro.example"))
    await run(cfg, chdb, [("s1", "acme-micro.example"), ("s2", "acme-micro.example")])
    assert len(sites.record.paths("acme-micro.example")) == n  # within the refresh age: no request
    rows = profiles(chdb, "acme-micro.example")
    assert [(r["site_id"], r["name"]) for r in rows] == [("s1", "Micro Data Ltd"), ("s2", "Micro Data Ltd")]
    assert rows[1]["field_sources"] == rows[0]["field_sources"]
    await run(settings(sites, refresh_age_s=0), chdb, [("s1", "acme-micro.example")])
    assert len(sites.record.paths("acme-micro.example")) > n  # older than the refresh age: fetched again


async def test_contacts_get_the_company_fields_through_the_contact_companies_view(
    sites: Sites, chdb: ChdbStorage
) -> None:
    await run(settings(sites), chdb, [("s1", "acme-jsonld.example"), ("s2", "acme-og.example")])
    chdb.insert(
        "contacts_data",
        [
            {"site_id": "s1", "contact_id": "user:1", "email": "jane@acme-jsonld.example",
             "company_domain": "acme-jsonld.example", "company_name": "Acme Jsonld", "version": 1},
            {"site_id": "s1", "contact_id": "user:2", "email": "joe@acme-og.example",
             "company_domain": "acme-og.example", "company_name": "Acme Og", "version": 1},
        ],
    )  # fmt: skip
    rows = chdb.query(f"SELECT * FROM {chdb.database}.contact_companies ORDER BY contact_id")
    # user:2's company was looked up for site s2 only: another site's profile is not this site's
    assert [(r["contact_id"], r["company_name"], r["country"]) for r in rows] == [("user:1", "Acme Widgets", "DE")]
    assert orjson.loads(rows[0]["field_sources"])["mail_provider"] == "dns:MX acme-jsonld.example"


async def test_the_sql_endpoint_shows_a_site_only_its_own_company_profiles(sites: Sites, chdb: ChdbStorage) -> None:
    from journey_builder.sql_sandbox import SqlSandbox
    from trailmark.settings import SqlSettings

    await run(settings(sites, rdap=False), chdb, [("s1", "acme-og.example"), ("s2", "acme-micro.example")])
    sandbox, db = SqlSandbox(SqlSettings(), chdb.database), chdb.database
    for table in ("company_profiles_data", "company_profiles"):
        rows, _ = sandbox.run(chdb, "s1", f"SELECT domain FROM {db}.{table}", None, f"q-{table}")
        assert [r["domain"] for r in rows] == ["acme-og.example"]


async def test_a_redirect_loop_stops_at_the_redirect_limit(sites: Sites, chdb: ChdbStorage) -> None:
    before = len(sites.record.paths("loop.example"))
    await run(settings(sites, dns=False, rdap=False, max_redirects=3), chdb, [("s1", "loop.example")])
    (p,) = profiles(chdb, "loop.example")
    assert p["status"] == "refused"
    assert "more than 3 redirects" in p["reason"]
    assert sites.record.paths("loop.example")[before:] == ["/robots.txt", "/", "/x", "/xx", "/xxx"]
