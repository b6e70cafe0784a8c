"""Autocapture in a real browser: every click (selector, text, link, never field values; dead clicks),
rage clicks, form submits (field names only; data-identify sends the email), JS errors. Click
positions and the click map: test_clickmap.py."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import Server
from tests.tracker.conftest import Site, Tab, of, rows, settle

pytestmark = pytest.mark.browser


def by_event(events: list[dict], name: str) -> list[dict]:
    return [e["properties"] for e in events if e["event"] == name]


def test_clicks_carry_selector_and_text_but_never_field_values(collector: Server, site: Site, tab: Tab) -> None:
    tab.goto("basic.html")
    aid = tab.aid
    tab.page.fill("#secret", "TOPSECRET-typed")
    tab.page.fill("#secret2", "TOPSECRET-area")
    tab.page.click("button.cta span")  # the click lands on the span; the button is reported
    tab.page.click(".widget", position={"x": 3, "y": 3})  # [data-track] holding the filled fields
    tab.page.click("#secret")
    tab.page.click("#out")
    tab.page.click("#dl")
    tab.page.click("#work")
    for _ in range(3):
        tab.page.click("#rage")
    assert tab.js("window.worked") == 1  # the page's own handler ran
    of(collector, aid, 1, "event = '$rage_click'")
    events = of(collector, aid, 10, "type = 'track'")
    keys = ("selector", "text", "tag", "href", "track", "dead")
    clicks = [{k: c[k] for k in keys if k in c} for c in by_event(events, "$click")]
    button = {"selector": "div.card:nth-of-type(1)>button.cta.big", "text": "Start free trial", "tag": "button"}
    assert clicks[0] == {**button, "dead": False}
    widget = {"selector": "div.widget:nth-of-type(2)", "text": "Join us", "tag": "div", "track": "newsletter-box"}
    assert clicks[1] == clicks[2] == {**widget, "dead": False}  # the click in the field reports its box
    assert clicks[3] == {
        "selector": "a#out",
        "text": "Partner",
        "tag": "a",
        "href": "https://outbound.invalid/landing?x=1",
        "dead": False,
    }
    assert clicks[4]["href"] == site.url + "/files/report.pdf"  # outbound and download links: by href
    assert clicks[5]["selector"] == "button#work"
    # every click is sent: those on the plain <span> are dead clicks
    assert clicks[6:] == [{"selector": "span#rage", "text": "not a button", "tag": "span", "dead": True}] * 3
    assert len(clicks) == 9
    assert not by_event(events, "$outbound") and not by_event(events, "$download")  # gone: redundant with href
    assert by_event(events, "$rage_click") == [{"selector": "span#rage", "text": "not a button", "tag": "span"}]
    everything = orjson.dumps(rows(collector, f"anonymous_id = '{aid}'"), default=str).decode()
    assert "TOPSECRET" not in everything
    assert not tab.errors


def test_form_submit_identifies_by_email_and_sends_field_names_only(collector: Server, tab: Tab) -> None:
    tab.goto("form.html")
    aid = tab.aid
    tab.page.fill("[name=full_name]", "Janet Secretname")
    tab.page.fill("[name=email]", " Jane.Doe@Example.org ")
    tab.page.fill("[name=password]", "hunter2-password")
    tab.page.check("[name=plan][value=pro]")
    tab.page.click("#send")
    tab.page.fill("[name=q]", "private-query-words")
    tab.page.press("[name=q]", "Enter")
    assert tab.page.text_content("#done") == "thanks"
    events = of(collector, aid, 3, "event = '$form_submit' OR type = 'identify'")
    [ident] = [e for e in events if e["type"] == "identify"]
    assert ident["traits"] == {"email": "Jane.Doe@Example.org"}
    assert (ident["email"], ident["user_id"]) == ("jane.doe@example.org", "")
    forms = by_event(events, "$form_submit")
    assert forms == [
        {"id": "signup", "name": "signup", "action": "/thanks", "fields": ["full_name", "email", "password", "plan"]},
        {"id": "search", "name": None, "action": "/search", "fields": ["q"]},
    ]
    assert [e["type"] for e in events].count("identify") == 1  # the search form has no data-identify
    settle(collector)
    everything = orjson.dumps(rows(collector, f"anonymous_id = '{aid}'"), default=str).decode()
    for secret in ("Secretname", "hunter2", "private-query"):
        assert secret not in everything


def test_js_errors_are_reported_at_most_ten_per_page(collector: Server, site: Site, tab: Tab) -> None:
    url = tab.goto("basic.html")
    aid = tab.aid
    tab.page.click("#boom")
    tab.page.click("#reject")
    tab.page.wait_for_function("1")
    for _ in range(11):
        tab.page.click("#boom")
    errors = of(collector, aid, 10, "event = '$error'")
    line = next(i for i, text in enumerate(site.render("basic.html").splitlines(), 1) if "throw new Error" in text)
    first = errors[0]["properties"]
    assert "boom-from-page" in first["message"]
    assert (first["source"], first["line"]) == (url, line)
    assert first["col"] > 0
    assert "rejected-from-page" in errors[1]["properties"]["message"]
    settle(collector)
    assert len(rows(collector, f"anonymous_id = '{aid}' AND event = '$error'")) == 10
    assert tab.js("typeof window.trailmark") == "function"  # the tracker is still alive
    assert len(tab.errors) == 13  # the page's own errors are still uncaught, as without the tracker
