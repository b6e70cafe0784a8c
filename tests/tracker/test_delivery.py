"""Delivery when the collector fails: the retry queue in localStorage (tm_q), exponential backoff,
draining on the next page load, 4xx answers are final, and the host page never notices.

This module stops and restarts its collector, so it has its own (see the ``collector`` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import Server, free_port
from tests.tracker.conftest import Site, Tab, of, rows, settle, until

pytestmark = pytest.mark.browser

QUEUE = "JSON.parse(localStorage.getItem('tm_q') || '[]')"


def queued(tab: Tab) -> list[str]:
    return [e.get("event") or e["type"] for e in tab.js(QUEUE)]


def pause_now(tab: Tab) -> None:
    """From now on the page's time moves only when the test says so: the clock paused just ahead
    of the page's now. A loaded machine can take longer than that margin between reading the time
    and pausing (Playwright refuses to pause in the past), so the time is read again then."""
    for _ in range(5):
        try:
            tab.page.clock.pause_at(tab.js("Date.now()") / 1000 + 0.25)
            return
        except PlaywrightError as exc:
            if "past" not in str(exc):
                raise
    raise AssertionError("the page's clock kept running past the pause")


def wait_queued(tab: Tab, name: str) -> None:
    tab.page.wait_for_function(f"{QUEUE}.some((e) => e.event == {name!r})", timeout=15_000)


class Gate:
    """page.route on /v1/batch: answers 500 while closed, lets requests through when open."""

    def __init__(self, tab: Tab) -> None:
        self.closed = False
        self.hits = 0
        tab.context.route(tab.collector.url + "/v1/batch", self.handle)

    def handle(self, route: Any) -> None:
        self.hits += 1
        if self.closed:
            route.fulfill(status=500, body='{"error": "down"}', headers={"Access-Control-Allow-Origin": "*"})
        else:
            route.continue_()


def test_5xx_answers_are_retried_with_exponential_backoff(collector: Server, tab: Tab) -> None:
    gate = Gate(tab)
    clock = tab.page.clock
    clock.install()
    tab.goto("basic.html")
    aid = tab.aid
    pause_now(tab)
    clock.run_for(2_000)  # the first page view goes out (and the load-time retry finds nothing)
    of(collector, aid, 1, "type = 'page'")
    hits = gate.hits

    gate.closed = True
    tab.js("window.trailmark('track', 'Queued')")
    clock.run_for(1_000)  # the 1 s batch delay: sent, answered 500, kept for retry
    wait_queued(tab, "Queued")
    assert gate.hits == hits + 1
    # 1st retry after 2 s x 0.5-1.5 jitter
    clock.run_for(950)
    tab.pump()
    assert gate.hits == hits + 1, "retried before the backoff"
    clock.run_for(2_100)
    until(lambda: gate.hits == hits + 2, what="the first retry")
    wait_queued(tab, "Queued")  # failed again: back in the queue
    # 2nd retry after 4 s x 0.5-1.5
    clock.run_for(1_950)
    tab.pump()
    assert gate.hits == hits + 2, "retried before the backoff"
    gate.closed = False  # the collector is back
    clock.run_for(4_100)
    [ev] = of(collector, aid, 1, "event = 'Queued'")
    assert ev["page_path"] == "/basic.html"
    tab.page.wait_for_function(f"{QUEUE}.length == 0")
    assert gate.hits == hits + 3
    assert not tab.errors


def test_a_success_drains_the_queue_without_waiting_for_the_backoff(collector: Server, tab: Tab) -> None:
    gate = Gate(tab)
    clock = tab.page.clock
    clock.install()
    tab.goto("basic.html")
    aid = tab.aid
    pause_now(tab)
    clock.run_for(2_000)
    of(collector, aid, 1, "type = 'page'")
    gate.closed = True
    tab.js("window.trailmark('track', 'Queued Early')")
    clock.run_for(1_000)
    wait_queued(tab, "Queued Early")  # the retry is now 1-3 s away
    gate.closed = False
    tab.js("window.trailmark('track', 'Live')")
    clock.run_for(1_000)  # the live batch goes out; its success sends the queue at once
    events = of(collector, aid, 2, "event IN ('Queued Early', 'Live')")
    assert sorted(e["event"] for e in events) == ["Live", "Queued Early"]
    tab.page.wait_for_function(f"{QUEUE}.length == 0")


def test_events_queued_while_the_collector_is_down_arrive_when_it_is_back(
    collector: Server, site: Site, tab: Tab
) -> None:
    site.src = site.url + "/t.js"  # the collector also serves t.js; here it is down
    site.attrs["api"] = collector.url
    collector.stop()
    try:
        tab.goto("basic.html", "?visit=1")
        aid = tab.aid
        tab.js("window.trailmark('track', 'While Down', {n: 1})")
        tab.page.click("#work")
        wait_queued(tab, "While Down")
        assert set(queued(tab)) >= {"page", "While Down", "$click"}
        assert tab.js("window.worked") == 1 and not tab.errors
    finally:
        collector.start()
    # the next page load drains the queue (after 0.5-1.5 s)
    tab.goto("basic.html", "?visit=2")
    events = of(collector, aid, 4, "type = 'page' OR event IN ('While Down', '$click')")
    assert sorted(e["page_url"].rsplit("=", 1)[1] for e in events if e["type"] == "page") == ["1", "2"]
    [down] = [e for e in events if e["event"] == "While Down"]
    assert (down["properties"], down["page_url"]) == ({"n": 1}, site.url + "/basic.html?visit=1")
    tab.page.wait_for_function(f"{QUEUE}.length == 0")
    settle(collector)
    assert len(rows(collector, f"anonymous_id = '{aid}' AND event = 'While Down'")) == 1


@pytest.mark.parametrize("failure", ["500", "unreachable"])
def test_the_host_page_keeps_working_when_the_collector_fails(
    collector: Server, site: Site, open_tab: Callable[..., Tab], failure: str
) -> None:
    tab = open_tab()
    if failure == "500":
        Gate(tab).closed = True
    else:
        site.src = site.url + "/t.js"
        site.attrs["api"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tab.goto("basic.html")
    for _ in range(3):
        tab.page.click("#work")
    tab.js("for (let i = 0; i < 150; i++) window.trailmark('track', 'Flood', {i})")
    tab.js("history.pushState({}, '', '/elsewhere')")
    tab.hide()
    assert tab.page.text_content("#work") == "worked 3"
    tab.page.wait_for_function(f"{QUEUE}.length == 100", timeout=15_000)  # bounded: the newest 100 kept
    assert tab.js("window.worked") == 3
    assert tab.js("typeof window.trailmark") == "function"
    assert not tab.errors  # nothing uncaught reached the page


def test_4xx_answers_are_final(collector: Server, site: Site, tab: Tab) -> None:
    site.attrs["key"] = "not-a-write-key"
    tab.goto("basic.html")
    until(lambda: tab.responses, what="the collector's answer")
    assert tab.responses[0][0] == 401
    tab.js("window.trailmark('track', 'After 401')")
    until(lambda: len(tab.responses) >= 2, what="the second answer")
    assert tab.js(QUEUE) == []  # not kept for retry
    assert not tab.errors
