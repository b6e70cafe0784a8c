"""Privacy switches in a real browser: opt-out, DNT / GPC with data-respect-dnt, require-consent,
cookieless mode. "Nothing sent" is checked three ways: Playwright's request log, the recording relay
(data-api points at it, so it sees beacons sent while the page unloads too) and ClickHouse."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.conftest import Server
from tests.tracker.conftest import Site, Tab, of, rows, settle, until

pytestmark = pytest.mark.browser


def use_everything(tab: Tab, run: str) -> None:
    """Clicks, a form field, custom events, a SPA view, an error, hiding and leaving the page."""
    tab.page.click("button.cta")
    tab.page.click("#work")
    tab.page.fill("#secret", "typed")
    tab.js("window.trailmark('track', 'Should Not Be Sent'); window.trailmark('identify', 'u-1', {email: 'a@b.org'})")
    tab.js(f"history.pushState({{}}, '', '/elsewhere?run={run}')")
    tab.page.click("#boom")
    tab.hide()
    tab.page.click("#internal")  # pagehide: the beacon flush
    tab.page.wait_for_selector("#plain")


def assert_nothing_sent(collector: Server, site: Site, tab: Tab, run: str) -> None:
    settle(collector)
    assert [body for _, body in tab.posts] == []  # no fetch, no beacon seen by Playwright
    assert site.received == []  # nothing reached /v1/batch on the wire
    assert rows(collector, f"page_url LIKE '%{run}%' OR context LIKE '%{run}%'") == []


def test_opt_out_sends_and_keeps_nothing(collector: Server, site: Site, tab: Tab) -> None:
    site.attrs["api"] = site.relay
    run = uuid.uuid4().hex
    tab.goto("basic.html", f"?run={run}")
    tab.js("window.trailmark('optOut')")  # within the 1 s batch delay: the buffered page view is dropped
    storage = tab.storage()
    assert storage["local"] == {"tm_consent": "0"}  # the choice itself, nothing else
    assert "tm_aid" not in storage["cookie"]
    use_everything(tab, run)
    tab.goto("basic.html", f"?run={run}&again=1")  # the choice is kept on the next load
    assert tab.storage()["local"] == {"tm_consent": "0"}
    tab.page.click("button.cta")
    tab.hide()
    assert_nothing_sent(collector, site, tab, run)
    # ... until the visitor opts in again: the page view that was not sent goes out
    tab.js("window.trailmark('optIn')")
    [pv] = until(lambda: rows(collector, f"page_url LIKE '%{run}&again=1'"), what="the page view after optIn")
    assert pv["type"] == "page" and tab.js("localStorage.getItem('tm_consent')") == "1"


def test_opt_out_queued_before_load(collector: Server, site: Site, tab: Tab) -> None:
    site.attrs["api"] = site.relay
    site.before = "trailmark('optOut')"
    run = uuid.uuid4().hex
    tab.goto("basic.html", f"?run={run}")
    use_everything(tab, run)
    assert_nothing_sent(collector, site, tab, run)


SIGNALS = {
    "doNotTrack": "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})",
    "globalPrivacyControl": "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})",
}


@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_dnt_and_gpc_block_everything_with_respect_dnt(collector: Server, site: Site, tab: Tab, signal: str) -> None:
    tab.context.add_init_script(SIGNALS[signal])
    site.attrs.update({"api": site.relay, "respect-dnt": ""})
    run = uuid.uuid4().hex
    tab.goto("basic.html", f"?run={run}")
    assert tab.js(f"navigator.{signal}") in ("1", True)
    assert tab.storage() == {"local": {}, "session": {}, "cookie": ""}  # nothing stored either
    use_everything(tab, run)
    assert tab.context.cookies() == []
    assert_nothing_sent(collector, site, tab, run)


def test_dnt_is_ignored_without_respect_dnt(collector: Server, tab: Tab) -> None:
    tab.context.add_init_script(SIGNALS["doNotTrack"])
    tab.goto("basic.html")
    of(collector, tab.aid, 1, "type = 'page'")


def test_require_consent_waits_for_opt_in(collector: Server, site: Site, tab: Tab) -> None:
    site.attrs.update({"api": site.relay, "require-consent": ""})
    run = uuid.uuid4().hex
    tab.goto("basic.html", f"?run={run}")
    tab.page.click("button.cta")
    tab.js("window.trailmark('track', 'Before Consent')")
    assert tab.storage() == {"local": {}, "session": {}, "cookie": ""}
    settle(collector)
    tab.page.wait_for_timeout(1_200)  # past the 1 s batch delay: nothing may leave even then
    assert tab.posts == [] and site.received == []
    tab.js("window.trailmark('optIn')")
    aid = tab.aid
    assert tab.js("localStorage.getItem('tm_consent')") == "1" and f"tm_aid={aid}" in tab.storage()["cookie"]
    tab.js("window.trailmark('track', 'After Consent')")
    events = of(collector, aid, 2)
    assert sorted(e["event"] or e["type"] for e in events) == ["After Consent", "page"]
    assert events[0]["page_url"].endswith(run)


def test_cookieless_mode_stores_nothing(collector: Server, site: Site, open_tab: Callable[..., Tab]) -> None:
    tab = open_tab()
    site.attrs["cookieless"] = ""
    tab.goto("basic.html", "?utm_source=cookieless")
    tab.page.click("button.cta")
    tab.js("window.trailmark('identify', 'user-cookieless', {plan: 'free'})")
    tab.js("history.pushState({}, '', '/cookieless-2')")
    tab.js("window.trailmark('track', 'Cookieless Event')")
    events = until(lambda: len(tab.sent) >= 5 and tab.sent, what="the events on the wire")
    aid = events[0]["anonymousId"]
    assert {e["anonymousId"] for e in events} == {aid}
    stored = of(collector, aid, 5)
    assert sorted(e["event"] or e["type"] for e in stored) == ["$click", "Cookieless Event", "identify", "page", "page"]
    assert stored[-1]["user_id"] == "user-cookieless"
    assert tab.storage() == {"local": {}, "session": {}, "cookie": ""}
    assert tab.context.cookies() == []
    # the ids live in memory only: the next page load is a new anonymous visitor
    tab.page.reload()
    again = until(lambda: [e for e in tab.sent if e["anonymousId"] != aid], what="the second page view")
    assert again[0]["type"] == "page" and again[0].get("userId") is None
    assert tab.storage() == {"local": {}, "session": {}, "cookie": ""}
