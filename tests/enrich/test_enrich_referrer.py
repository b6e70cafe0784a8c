"""Referrers, campaign tags, click ids and channel grouping on real URLs."""

import pytest

from tests.enrich.helpers import page_event

PAGE = "https://www.example.com/landing"

REFERRERS = [
    # referrer, type, name, search term
    ("https://www.google.com/", "search", "Google", ""),
    ("https://www.google.de/search?q=laufschuhe+test&hl=de", "search", "Google", "laufschuhe test"),
    ("https://www.google.co.uk/url?sa=t&q=&esrc=s", "search", "Google", ""),
    ("https://www.bing.com/search?q=crm+software&form=QBLH", "search", "Bing", "crm software"),
    ("https://duckduckgo.com/", "search", "DuckDuckGo", ""),
    ("https://duckduckgo.com/?q=privacy+analytics&t=h_", "search", "DuckDuckGo", "privacy analytics"),
    ("https://search.yahoo.co.jp/search?p=%E3%83%86%E3%82%B9%E3%83%88", "search", "Yahoo!", "テスト"),
    ("https://yandex.ru/search/?text=test&lr=213", "search", "Yandex", "test"),
    ("https://www.baidu.com/s?wd=python", "search", "Baidu", "python"),
    ("https://www.ecosia.org/search?q=trees", "search", "Ecosia", "trees"),
    ("https://android-app/x", "other", "", ""),
    ("android-app://com.google.android.googlequicksearchbox/", "search", "Google", ""),
    ("https://l.facebook.com/l.php?u=https%3A%2F%2Fwww.example.com%2F&h=AT0", "social", "Facebook", ""),
    ("https://m.facebook.com/", "social", "Facebook", ""),
    ("https://t.co/AbCdEf123", "social", "Twitter", ""),
    ("https://www.linkedin.com/feed/", "social", "LinkedIn", ""),
    ("https://lnkd.in/eXyZ", "social", "LinkedIn", ""),
    ("https://www.instagram.com/", "social", "Instagram", ""),
    ("https://out.reddit.com/t3_abc", "social", "Reddit", ""),
    ("https://news.ycombinator.com/item?id=1", "social", "Hacker News", ""),
    ("https://www.youtube.com/", "social", "YouTube", ""),
    ("https://mail.google.com/", "email", "Gmail", ""),
    ("android-app://com.google.android.gm/", "email", "Gmail", ""),
    ("https://outlook.live.com/mail/0/inbox", "email", "Outlook.com", ""),
    ("https://outlook.office.com/", "email", "Outlook.com", ""),
    ("https://mail.yahoo.com/d/folders/1", "email", "Yahoo! Mail", ""),
    ("https://deref-gmx.net/mail/client/abc/dereferrer/?redirectUrl=x", "email", "GMX", ""),
    ("https://chatgpt.com/", "other", "ChatGPT", ""),
    ("https://some-blog.net/post/1", "other", "", ""),
]


@pytest.mark.parametrize(("ref", "rtype", "name", "term"), REFERRERS)
def test_referrers(enricher, ref, rtype, name, term):
    out = enricher.enrich(page_event(PAGE, ref))
    assert out["referrer"] == ref
    assert out["referrer_type"] == rtype
    assert out["referrer_name"] == name
    assert out["search_term"] == term


def test_referrer_host(enricher):
    out = enricher.enrich(page_event(PAGE, "https://L.Facebook.com./l.php?u=x"))
    assert out["referrer_host"] == "l.facebook.com"


@pytest.mark.parametrize(
    "ref", ["https://www.example.com/other", "https://blog.example.com/post", "http://example.com/"]
)
def test_internal_same_registrable_domain(enricher, ref):
    out = enricher.enrich(page_event(PAGE, ref))
    assert out["referrer_type"] == "internal"
    assert out["channel"] == "Internal"


def test_internal_respects_public_suffix(enricher):
    # alice.github.io and bob.github.io are different sites (github.io is a public suffix)...
    out = enricher.enrich(page_event("https://shop.acme.co.uk/", "https://www.acme.co.uk/"))
    assert out["referrer_type"] == "internal"
    out = enricher.enrich(page_event("https://shop.acme.co.uk/", "https://www.other.co.uk/"))
    assert out["referrer_type"] == "other"


def test_page_fields_and_tracking_params_stripped(enricher):
    url = (
        "https://www.example.com/pricing?plan=pro&utm_source=newsletter&utm_medium=email"
        "&utm_campaign=spring_sale&utm_content=hero&utm_term=crm&fbclid=IwAR0abc&_gl=1*xyz&ref=nav"
    )
    out = enricher.enrich(page_event(url))
    assert out["page_url"] == url
    assert (out["page_host"], out["page_path"], out["page_title"]) == ("www.example.com", "/pricing", "Home")
    assert out["page_query"] == "plan=pro&ref=nav"
    assert (out["utm_source"], out["utm_medium"], out["utm_campaign"]) == ("newsletter", "email", "spring_sale")
    assert (out["utm_content"], out["utm_term"]) == ("hero", "crm")
    assert (out["click_id_type"], out["click_id"]) == ("fbclid", "IwAR0abc")
    assert out["channel"] == "Email"
    assert out["content_group"] == "Pricing"


def test_page_query_untouched_without_tracking_params(enricher):
    out = enricher.enrich(page_event("https://www.example.com/search?q=a+b&page=2"))
    assert out["page_query"] == "q=a+b&page=2"


def test_context_campaign_wins_over_url(enricher):
    ev = page_event("https://www.example.com/?utm_source=url_src&utm_medium=url_med&utm_term=t")
    ev["context"]["campaign"] = {"name": "Launch", "source": "ctx_src", "medium": "cpc"}
    out = enricher.enrich(ev)
    assert (out["utm_campaign"], out["utm_source"], out["utm_medium"], out["utm_term"]) == (
        "Launch",
        "ctx_src",
        "cpc",
        "t",
    )


@pytest.mark.parametrize(
    ("url", "ref", "channel"),
    [
        ("/?gclid=EAIaIQobChM", "", "Paid Search"),
        ("/?gbraid=0AAAAA", "", "Paid Search"),
        ("/?msclkid=abc", "https://www.bing.com/", "Paid Search"),
        ("/?utm_source=google&utm_medium=cpc&utm_campaign=brand", "https://www.google.com/", "Paid Search"),
        ("/?utm_source=bing&utm_medium=ppc", "", "Paid Search"),
        ("/", "https://www.google.com/", "Organic Search"),
        ("/", "https://duckduckgo.com/?q=x", "Organic Search"),
        ("/?utm_source=facebook&utm_medium=paid_social", "", "Paid Social"),
        ("/?utm_source=fb&utm_medium=cpc", "https://l.facebook.com/", "Paid Social"),
        ("/?ttclid=E.C.P.abc", "", "Paid Social"),
        ("/?li_fat_id=1234", "", "Paid Social"),
        ("/", "https://l.facebook.com/l.php?u=x", "Organic Social"),
        ("/?fbclid=IwAR0", "", "Organic Social"),  # fbclid rides on every outbound Facebook link
        ("/", "https://t.co/abc", "Organic Social"),
        ("/?utm_source=linkedin&utm_medium=social", "", "Organic Social"),
        ("/", "https://www.youtube.com/watch?v=1", "Organic Social"),
        ("/?utm_source=youtube&utm_medium=cpv", "", "Paid Video"),
        ("/?utm_source=youtube&utm_medium=video", "", "Organic Video"),
        ("/?utm_medium=email&utm_source=mailchimp", "", "Email"),
        ("/?utm_source=newsletter", "", "Email"),
        ("/", "https://mail.google.com/", "Email"),
        ("/", "", "Direct"),
        ("/", "https://some-blog.net/post", "Referral"),
        ("/?utm_source=partner.com&utm_medium=referral", "", "Referral"),
        ("/?utm_source=awin&utm_medium=affiliate", "", "Affiliates"),
        ("/?utm_source=gdn&utm_medium=display", "", "Display"),
        ("/?utm_source=dv360&utm_medium=cpm", "", "Display"),
        ("/?dclid=CJ", "", "Display"),
        ("/?utm_source=amazon&utm_medium=cpc", "", "Paid Shopping"),
        ("/?utm_campaign=cross-network-pmax&utm_source=google&utm_medium=cpc", "", "Cross-network"),
        ("/?utm_source=twilio&utm_medium=sms", "", "SMS"),
        ("/?utm_source=spotify&utm_medium=audio", "", "Audio"),
        ("/?utm_source=firebase&utm_medium=push", "", "Mobile Push Notifications"),
        ("/?utm_source=weird&utm_medium=something", "", "Other"),
        ("/?utm_campaign=x", "", "Other"),
    ],
)
def test_channel_grouping(enricher, url, ref, channel):
    out = enricher.enrich(page_event("https://www.example.com" + url, ref))
    assert out["channel"] == channel, out


def test_segment_page_properties_fallback(enricher):
    ev = page_event()
    ev["context"] = {}
    ev["properties"] = {
        "url": "https://www.example.com/blog/hello?utm_source=x",
        "title": "Hello",
        "referrer": "https://www.bing.com/search?q=hello",
    }
    out = enricher.enrich(ev)
    assert (out["page_path"], out["page_title"], out["content_group"]) == ("/blog/hello", "Hello", "Blog")
    assert (out["referrer_name"], out["search_term"], out["utm_source"]) == ("Bing", "hello", "x")
