import pytest

from enrich import Enricher, EnrichSettings, PoisonEvent


def test_basic_page_event():
    e = Enricher(EnrichSettings())
    ev = {
        "site_id": "s1",
        "type": "page",
        "ip": "8.8.8.8",
        "context": {
            "page": {
                "url": "https://www.example.com/blog/x?utm_source=google&utm_medium=cpc&gclid=abc&a=1",
                "title": "T",
                "referrer": "https://www.google.co.uk/search?q=hello+world",
            }
        },
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    }
    out = e.enrich(ev)
    assert out["page_path"] == "/blog/x" and out["page_query"] == "a=1"
    assert out["search_term"] == "hello world" and out["referrer_name"] == "Google"
    assert out["click_id_type"] == "gclid" and out["channel"] == "Paid Search"
    assert out["ua_browser"] == "Chrome" and out["ua_device_type"] == "desktop"
    assert out["enrich_errors"] == []


def test_poison():
    with pytest.raises(PoisonEvent):
        Enricher().enrich([])  # type: ignore[arg-type]
