"""Switches, failure isolation, poison events, the output contract and the no-network rule."""

import pytest

from enrich import Enricher, EnrichSettings, PoisonEvent
from enrich.content import ContentGrouper
from schemas.events import ENRICHED_DEFAULTS, RawEvent
from tests.enrich.helpers import page_event

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def full_event(**extra):
    ev = page_event(
        "https://www.example.com/blog/post?utm_source=google&utm_medium=cpc&gclid=abc&x=1",
        "https://www.google.com/search?q=trailmark",
        type="identify",
        ip="81.2.69.142",
        user_agent=CHROME,
        traits={"email": "ann@acme.io", "phone": "+44 20 7946 0958", "name": "Ann Lee"},
    )
    ev.update(extra)
    return ev


def test_output_contract(enricher):
    ev = full_event()
    out = enricher.enrich(ev)
    assert set(out) == set(ev) | set(ENRICHED_DEFAULTS)
    for key, default in ENRICHED_DEFAULTS.items():
        assert type(out[key]) is type(default), key
    assert out is not ev and out["enrich_errors"] == []
    assert out["geo_country"] == "GB" and out["phone_e164"] == "+442079460958" and out["channel"] == "Paid Search"
    assert out["content_group"] == "Blog" and out["first_name"] == "Ann"


def test_errors_list_not_shared(enricher):
    a = enricher.enrich(page_event())
    b = enricher.enrich(page_event())
    a["enrich_errors"].append("x")
    assert b["enrich_errors"] == [] and ENRICHED_DEFAULTS["enrich_errors"] == []


@pytest.mark.parametrize(
    ("switch", "zeroed"),
    [
        ("page", ["page_url", "page_host", "page_path", "page_title"]),
        ("campaign", ["utm_source", "utm_medium", "click_id_type", "click_id"]),
        ("referrer", ["referrer_host", "referrer_type", "referrer_name", "search_term"]),
        ("channel", ["channel"]),
        ("content_group", ["content_group"]),
        ("user_agent", ["ua_browser", "ua_os", "ua_device_type"]),
        ("geo", ["geo_country", "geo_org", "geo_timezone"]),
        ("contact", ["email", "phone_e164", "first_name", "company_domain"]),
        ("email", ["email", "email_domain", "company_domain"]),
        ("phone", ["phone_e164", "phone_country"]),
        ("names", ["first_name", "last_name"]),
    ],
)
def test_each_switch_off(enricher, switch, zeroed):
    base = {"content_groups": [("/blog/*", "Blog")]}
    on = enricher.enrich(full_event())
    off = Enricher(EnrichSettings(**base, **{switch: False})).enrich(full_event())
    for field in zeroed:
        assert on[field] != ENRICHED_DEFAULTS[field], field
        assert off[field] == ENRICHED_DEFAULTS[field], field
    assert off["enrich_errors"] == []


def test_bots_switch():
    on = Enricher(EnrichSettings(user_agent=False)).enrich(full_event(user_agent=GOOGLEBOT))
    assert (on["is_bot"], on["bot_name"], on["ua_browser"]) == (True, "Googlebot", "")
    off = Enricher(EnrichSettings(bots=False)).enrich(full_event(user_agent=GOOGLEBOT))
    assert (off["is_bot"], off["ua_browser"]) == (False, "Googlebot")


def test_truncate_ip_switch():
    assert Enricher(EnrichSettings(truncate_ip=False)).enrich(full_event())["ip"] == "81.2.69.142"
    assert Enricher(EnrichSettings(geo=False)).enrich(full_event())["ip"] == "81.2.69.0"  # privacy stays on


def test_geo_fallback_off():
    out = Enricher(EnrichSettings(geo_fallback=False)).enrich(full_event())
    assert out["geo_country"] == "" and out["enrich_errors"] == []


def test_failing_enrichment_is_recorded_not_dropped(enricher):
    broken = Enricher(EnrichSettings())

    def boom(ua):
        raise RuntimeError("parser exploded")

    broken._ua.parse = boom  # type: ignore[union-attr]
    out = broken.enrich(full_event())
    assert out["enrich_errors"] == ["user_agent: RuntimeError: parser exploded"]
    assert out["ua_browser"] == "" and out["geo_country"] == "GB" and out["email"] == "ann@acme.io"


def test_malformed_fields_do_not_poison(enricher):
    ev = full_event(
        context={"page": "not a dict", "campaign": ["x"]}, traits=None, properties="x", ip=12345, user_agent=None
    )
    out = enricher.enrich(ev)
    assert out["site_id"] == "site1" and out["enrich_errors"] == []
    ev = full_event(context={"page": {"url": "http://[::1/bad", "referrer": "http://exa mple.com:99999/"}})
    out = enricher.enrich(ev)
    assert out["site_id"] == "site1"  # bad URLs are an enrichment error at most, never a drop
    assert all(
        e.split(":")[0] in ("page", "campaign", "referrer", "channel", "content_group") for e in out["enrich_errors"]
    )


@pytest.mark.parametrize("bad", [None, [], "text", 42, {}, {"site_id": ""}, {"site_id": 5}, {"type": "page"}])
def test_poison_events(enricher, bad):
    with pytest.raises(PoisonEvent):
        enricher.enrich(bad)


def test_minimal_event(enricher):
    out = enricher.enrich(RawEvent(site_id="s") if False else {"site_id": "s"})  # type: ignore[typeddict-item]
    assert out["referrer_type"] == "direct" and out["channel"] == "Direct" and out["enrich_errors"] == []


def test_no_network_at_start_or_run(no_network):
    e = Enricher(EnrichSettings())
    out = e.enrich(full_event())
    assert out["company_domain"] == "acme.io" and out["geo_country"] == "GB"


def test_content_groups():
    g = ContentGrouper(
        [("/blog/*", "Blog"), ("/docs/*/api*", "API docs"), ("re:^/(pricing|plans)\\b", "Pricing"), ("/", "Home")]
    )
    assert g.group("/blog/2024/hello") == "Blog"
    assert g.group("/docs/v2/api-reference") == "API docs"
    assert g.group("/pricing") == "Pricing" and g.group("/plans/team") == "Pricing"
    assert g.group("/") == "Home"
    assert g.group("/about") == ""
    assert g.group("/pricingx") == ""
