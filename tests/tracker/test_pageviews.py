"""Page views in a real browser: first view (cross- and same-origin), SPA navigations, campaign tags
and click ids, bot flagging, the async stub, double inclusion, the noscript pixel, /t.js caching."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import orjson
import pytest

from tests.conftest import Server
from tests.tracker.conftest import Site, Tab, of, rows, settle, until

pytestmark = pytest.mark.browser


def tick(tab: Tab) -> None:
    """Run the page's pending zero-delay timers (the tracker checks the URL in a setTimeout)."""
    tab.js("new Promise((r) => setTimeout(r))")


@pytest.mark.parametrize("same_origin", [False, True], ids=["cross-origin", "same-origin"])
def test_first_page_view(collector: Server, site: Site, tab: Tab, same_origin: bool) -> None:
    url = tab.goto("basic.html", "?lang=en", same_origin=same_origin)
    aid = tab.aid
    assert f"tm_aid={aid}" in tab.storage()["cookie"]
    [pv] = of(collector, aid, 1, "type = 'page'")
    path = "/site/basic.html" if same_origin else "/basic.html"
    assert (pv["page_path"], pv["page_url"], pv["page_title"]) == (path, url, "Basic page")
    assert pv["context"]["library"]["name"] == "trailmark.js"
    assert pv["context"]["page"]["search"] == "?lang=en"
    assert pv["context"]["sessionId"] and pv["context"]["locale"]
    assert (pv["ua_browser"], pv["is_bot"]) == ("Chrome", False)
    # the wire: one text/plain POST (no preflight), the site's write key in the body, CORS answered
    until(lambda: tab.responses, what="the batch response")
    assert tab.batches[0]["writeKey"] == site.key and tab.batches[0]["sentAt"]
    assert tab.content_types[0].startswith("text/plain")
    origin = collector.url if same_origin else site.url
    assert tab.responses[0] == (200, origin)
    assert not tab.errors


def test_spa_navigations(collector: Server, site: Site, tab: Tab) -> None:
    first = tab.goto("basic.html")
    aid = tab.aid
    base = site.url
    steps = [
        "history.pushState({}, '', '/app/one?tab=a')",
        "history.replaceState({x: 1}, '', location.href)",  # same URL: not a new view
        "history.replaceState({}, '', '/app/two')",
        "history.pushState({}, '', '/app/three')",
    ]
    for step in steps:
        tab.js(step)
        tick(tab)
    tab.js("history.back()")  # popstate back to /app/two
    tab.page.wait_for_function("location.pathname == '/app/two'")
    tick(tab)
    tab.js("location.hash = '#section'")  # an in-page anchor: not a new view
    tab.page.wait_for_function("location.hash == '#section'")
    tick(tab)
    tab.js("location.hash = '#/inbox'")  # a hash-router route: a new view
    tab.page.wait_for_function("location.hash == '#/inbox'")
    tick(tab)
    views = of(collector, aid, 6, "type = 'page'")
    assert [(v["page_path"], v["page_url"]) for v in views] == [
        ("/basic.html", first),
        ("/app/one", f"{base}/app/one?tab=a"),
        ("/app/two", f"{base}/app/two"),
        ("/app/three", f"{base}/app/three"),
        ("/app/two", f"{base}/app/two"),
        ("/app/two", f"{base}/app/two#/inbox"),
    ]
    # a SPA view's referrer is the URL before it
    assert [v["referrer"] for v in views[1:]] == [v["page_url"] for v in views[:-1]]
    settle(collector)
    assert len(rows(collector, f"anonymous_id = '{aid}' AND type = 'page'")) == 6  # no extra views
    assert not tab.errors


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?utm_source=newsletter&utm_medium=email&utm_campaign=Spring%20Sale&utm_term=shoes&utm_content=hero",
         {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "Spring Sale", "utm_term": "shoes",
          "utm_content": "hero", "click_id_type": "", "channel": "Email"}),
        ("?gclid=g-123", {"click_id_type": "gclid", "click_id": "g-123", "channel": "Paid Search"}),
        ("?fbclid=fb-9&utm_source=facebook", {"click_id_type": "fbclid", "click_id": "fb-9",
                                              "utm_source": "facebook"}),
        ("?msclkid=ms-7", {"click_id_type": "msclkid", "click_id": "ms-7"}),
    ],
    ids=["utm", "gclid", "fbclid", "msclkid"],
)  # fmt: skip
def test_campaign_tags_and_click_ids(collector: Server, tab: Tab, query: str, expected: dict[str, str]) -> None:
    tab.goto("basic.html", query)
    [pv] = of(collector, tab.aid, 1, "type = 'page'")
    assert {k: pv[k] for k in expected} == expected
    campaign = pv["context"]["campaign"]
    if "utm_campaign" in expected:
        assert campaign == {"source": "newsletter", "medium": "email", "name": "Spring Sale", "term": "shoes",
                            "content": "hero"}  # fmt: skip
    else:
        assert campaign[expected["click_id_type"]] == expected["click_id"]


def test_referrer_from_a_search_engine(collector: Server, tab: Tab) -> None:
    tab.goto("basic.html", referer="https://www.google.com/")
    [pv] = of(collector, tab.aid, 1, "type = 'page'")
    assert (pv["referrer"], pv["referrer_host"], pv["channel"]) == ("https://www.google.com/", "www.google.com",
                                                                     "Organic Search")  # fmt: skip


def test_headless_chrome_is_flagged_as_a_bot_and_left_out_of_sessions(
    collector: Server, open_tab: Callable[..., Tab]
) -> None:
    bot = open_tab(user_agent=None)  # Playwright's default: "... HeadlessChrome/..."
    human = open_tab()  # a normal desktop Chrome user agent
    bot.goto("basic.html")
    human.goto("basic.html")
    assert "HeadlessChrome" in bot.js("navigator.userAgent")
    [b] = of(collector, bot.aid, 1, "type = 'page'")
    [h] = of(collector, human.aid, 1, "type = 'page'")
    assert (b["is_bot"], b["ua_browser"]) == (True, "HeadlessChrome")
    assert (h["is_bot"], h["ua_browser"]) == (False, "Chrome")
    # the journey builder makes a session of the human's visit, none of the bot's
    collector.wait_for(f"SELECT count() FROM trailmark.sessions WHERE anonymous_id = '{human.aid}'", 1)
    assert collector.sql(f"SELECT count() AS n FROM trailmark.sessions WHERE anonymous_id = '{bot.aid}'") == [{"n": 0}]


def test_async_stub_keeps_calls_made_before_load(collector: Server, site: Site, tab: Tab) -> None:
    site.before = ("trailmark('identify', 'user-42', {plan: 'pro'});"
                   " trailmark('track', 'Early Bird', {n: 1});"
                   " window.queuedBeforeLoad = window.trailmark.q.length")  # fmt: skip
    tab.goto("basic.html")
    assert tab.js("window.queuedBeforeLoad") == 2  # both were queued by the stub, not sent directly
    assert tab.js("typeof window.trailmark.q") == "undefined"  # the stub was replaced by the API
    events = {e["type"]: e for e in of(collector, tab.aid, 3)}
    assert sorted(events) == ["identify", "page", "track"]
    assert events["identify"]["traits"] == {"plan": "pro"}
    assert (events["track"]["event"], events["track"]["properties"]) == ("Early Bird", {"n": 1})
    assert {e["user_id"] for e in events.values()} == {"user-42"}  # the early identify is on the first page view
    # in the order they were made: the queued calls before the automatic page view
    assert [e["type"] for e in tab.sent] == ["identify", "track", "page"]
    assert tab.js("localStorage.getItem('tm_uid')") == "user-42"


def test_identify_alias_and_reset(collector: Server, tab: Tab) -> None:
    tab.goto("basic.html")
    aid = tab.aid
    tab.js("window.trailmark('identify', 'user-7', {email: 'Sam@Example.org', name: 'Sam'})")
    tab.js("window.trailmark('identify', null, {plan: 'team'})")  # traits only: the userId stays
    tab.js("window.trailmark('alias', 'user-8')")
    tab.js("window.trailmark('track', 'As User 8')")
    events = of(collector, aid, 5)
    by_type = {(e["type"], e["user_id"], orjson.dumps(e["traits"]).decode()): e for e in events}
    assert ("identify", "user-7", '{"email":"Sam@Example.org","name":"Sam"}') in by_type
    assert ("identify", "user-7", '{"plan":"team"}') in by_type
    [ident] = [e for e in events if e["traits"].get("email")]
    assert ident["email"] == "sam@example.org"
    [alias] = [e for e in tab.sent if e["type"] == "alias"]
    assert (alias["previousId"], alias["userId"]) == ("user-7", "user-8")
    [later] = [e for e in events if e["event"] == "As User 8"]
    assert later["user_id"] == "user-8"
    tab.js("window.trailmark('reset')")
    new_aid = tab.js("localStorage.getItem('tm_aid')")
    assert new_aid and new_aid != aid and tab.js("localStorage.getItem('tm_uid')") is None
    tab.js("window.trailmark('track', 'After Reset')")
    [after] = of(collector, new_aid, 1)
    assert (after["event"], after["user_id"]) == ("After Reset", "")


def test_included_twice_runs_once(collector: Server, tab: Tab) -> None:
    tab.goto("twice.html")
    aid = tab.aid
    of(collector, aid, 1, "type = 'page'")
    tab.js("window.trailmark('track', 'Once')")
    of(collector, aid, 1, "event = 'Once'")
    settle(collector)
    assert [e["type"] for e in rows(collector, f"anonymous_id = '{aid}'")] == ["page", "track"]


def test_noscript_pixel_records_a_page_view(collector: Server, open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(java_script_enabled=False)
    marker = uuid.uuid4().hex
    url = tab.goto("basic.html", f"?m={marker}")
    [pv] = until(lambda: rows(collector, f"page_url LIKE '%{marker}%'"), what="the pixel's page view")
    assert (pv["type"], pv["page_url"], pv["page_path"]) == ("page", url, "/basic.html")
    assert pv["context"]["library"]["name"] == "pixel"


def test_tracker_script_is_served_with_etag_and_cache_headers(collector: Server) -> None:
    r = httpx.get(collector.url + "/t.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert r.headers["cache-control"] == "public, max-age=300, must-revalidate"
    assert r.headers["access-control-allow-origin"] == "*"
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    again = httpx.get(collector.url + "/t.js", headers={"if-none-match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    stale = httpx.get(collector.url + "/t.js", headers={"if-none-match": '"something-else"'})
    assert stale.status_code == 200 and stale.content == r.content
    pinned = httpx.get(collector.url + "/t.js?v=1")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
