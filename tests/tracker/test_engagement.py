"""Engaged time and scroll depth ($engagement) and the flush with sendBeacon when the page is left.

Engagement runs on a 1 s heartbeat, so these tests drive the page's clock (Playwright's
page.clock) instead of waiting in real time."""

from __future__ import annotations

import pytest

from tests.conftest import Server
from tests.tracker.conftest import Site, Tab, of, until

pytestmark = pytest.mark.browser

DEPTH = "Math.round((scrollY + innerHeight) * 100 / document.documentElement.scrollHeight)"


def test_scroll_depth_and_engaged_time_are_sent_on_hide(collector: Server, tab: Tab) -> None:
    tab.page.clock.install()
    tab.goto("long.html")
    aid = tab.aid
    tab.page.mouse.move(100, 100)
    tab.js("window.scrollTo(0, document.documentElement.scrollHeight / 2)")
    tab.page.wait_for_function("scrollY > 0")
    half = tab.js(DEPTH)
    tab.js("window.scrollTo(0, 0)")  # the maximum depth is kept
    tab.page.wait_for_function("scrollY == 0")
    assert 40 < half < 80
    # 60 s pass, the user active only at the start: at most the 30 s activity window counts
    tab.page.clock.run_for(60_000)
    tab.hide()
    [eng] = of(collector, aid, 1, "event = '$engagement'")
    props = eng["properties"]
    assert props["scroll_depth"] == half
    assert props["engaged_ms"] % 1000 == 0 and 29_000 <= props["engaged_ms"] <= 32_000, props
    assert eng["page_path"] == "/long.html"
    # sent with sendBeacon on hide, not with fetch
    beacons = until(lambda: tab.beacons, what="a beacon")
    assert [e["event"] for b in beacons for e in b["batch"]] == ["$engagement"]
    assert not any(e.get("event") == "$engagement" for e in tab.sent)


def test_engagement_of_a_spa_view_keeps_its_own_page(collector: Server, site: Site, tab: Tab) -> None:
    tab.page.clock.install()
    tab.goto("long.html")
    aid = tab.aid
    tab.page.mouse.move(50, 50)
    tab.js("window.scrollTo(0, document.documentElement.scrollHeight)")
    tab.page.wait_for_function("scrollY > 0")
    tab.page.clock.run_for(3_000)
    tab.js("history.pushState({}, '', '/chapter-2')")
    tab.page.clock.run_for(1_500)  # the route check, then the 1 s batch delay
    events = of(collector, aid, 1, "event = '$engagement'")
    [eng] = events
    assert (eng["page_path"], eng["page_url"]) == ("/long.html", site.url + "/long.html")
    assert eng["properties"]["scroll_depth"] == 100
    assert 3_000 <= eng["properties"]["engaged_ms"] <= 6_000
    views = of(collector, aid, 2, "type = 'page'")
    assert [v["page_path"] for v in views] == ["/long.html", "/chapter-2"]


@pytest.mark.parametrize("via", ["cross-origin", "same-origin", "relay"])
@pytest.mark.parametrize("leave", ["navigate", "close"])
def test_leaving_the_page_flushes_with_send_beacon(
    collector: Server, site: Site, tab: Tab, leave: str, via: str
) -> None:
    if via == "relay":  # the recording relay sees the beacon on the wire
        site.attrs["api"] = site.relay
    tab.goto("basic.html", same_origin=via == "same-origin")
    aid = tab.aid
    of(collector, aid, 1, "type = 'page'")  # the first page view went out with fetch
    # buffered for 1 s, but the page goes away at once
    tab.js("window.trailmark('track', 'Leaving Soon', {why: 'test'}); window.trailmark('track', 'Last Words')")
    if leave == "navigate":
        tab.page.click("#internal")
        tab.page.wait_for_selector("#plain")
    else:
        tab.page.close()
    events = of(collector, aid, 2, "event IN ('Leaving Soon', 'Last Words')")
    assert sorted((e["event"], e["properties"]) for e in events) == [
        ("Last Words", {}),
        ("Leaving Soon", {"why": "test"}),
    ]
    assert not any(e.get("event") == "Leaving Soon" for e in tab.sent)  # not sent with fetch
    if via == "relay":
        [(path, headers, _)] = [r for r in site.received if b"Leaving Soon" in r[2]]
        assert path == "/v1/batch"
        assert headers["Content-Type"] == "text/plain;charset=UTF-8"
        assert {"Leaving Soon", "Last Words"} <= {e.get("event") for e in site.relayed()}
