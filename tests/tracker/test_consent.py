"""Consent on every event, in a real browser: what trailmark.js sends in ``context.consent`` is what
ClickHouse stores with each event (``consent``, ``consent_dnt``, ``consent_cookieless``) and with the
contact. Denied (opted out): nothing is sent, so nothing is stored; granted (opted in); GPC on (without
data-respect-dnt, which would block everything: tests/tracker/test_privacy.py); cookieless."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Server
from tests.tracker.conftest import Site, Tab, rows, settle, until

pytestmark = pytest.mark.browser
GPC = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"


def stored_consent(server: Server, aid: str, n: int) -> list[dict[str, Any]]:
    def got() -> list[dict[str, Any]] | None:
        found = server.sql(
            "SELECT type, consent, consent_dnt, consent_cookieless FROM trailmark.events"
            f" WHERE anonymous_id = '{aid}' ORDER BY timestamp, message_id"
        )
        return found if len(found) >= n else None

    return until(got, what=f"{n} events of {aid}")


def sent_consent(tab: Tab, n: int) -> list[tuple[Any, bool, Any]]:
    """(choice, DNT or GPC, ids stored) of each event sent; DNT/GPC as a bool (an unset GPC is null)."""
    events = until(lambda: len(tab.sent) >= n and tab.sent, what=f"{n} events on the wire")
    return [(c[0], bool(c[1]), c[2]) for c in (e["context"]["consent"] for e in events)]


def test_denied_sends_nothing_and_stores_nothing(collector: Server, site: Site, tab: Tab) -> None:
    site.attrs["api"] = site.relay
    site.before = "trailmark('optOut')"
    run = uuid.uuid4().hex
    tab.goto("basic.html", f"?run={run}")
    tab.page.click("button.cta")
    tab.js("window.trailmark('identify', 'u-denied', {email: 'denied@example.org'})")
    tab.hide()
    settle(collector)
    assert tab.posts == [] and site.received == []
    assert rows(collector, f"page_url LIKE '%{run}%' OR user_id = 'u-denied'") == []
    assert collector.sql("SELECT count() AS n FROM trailmark.contacts WHERE user_id = 'u-denied'")[0]["n"] == 0


def test_granted_is_stored_with_every_event_and_the_contact(collector: Server, site: Site, tab: Tab) -> None:
    site.before = "trailmark('optIn')"
    user = "u-granted-" + uuid.uuid4().hex[:8]
    tab.goto("basic.html")
    tab.page.click("button.cta")
    tab.js(f"window.trailmark('identify', '{user}', {{plan: 'pro'}})")
    assert set(sent_consent(tab, 3)) == {(1, False, True)}  # opted in, no DNT/GPC, ids stored
    stored = stored_consent(collector, tab.aid, 3)
    assert {(r["consent"], r["consent_dnt"], r["consent_cookieless"]) for r in stored} == {("granted", False, False)}
    query = f"SELECT consent, consent_dnt FROM trailmark.contacts WHERE user_id = '{user}'"
    contact = until(lambda: collector.sql(query), what="the contact")
    assert contact == [{"consent": "granted", "consent_dnt": False}]


def test_gpc_on_is_stored(collector: Server, tab: Tab) -> None:
    tab.context.add_init_script(GPC)
    tab.goto("basic.html")
    tab.page.click("button.cta")
    assert set(sent_consent(tab, 2)) == {(None, True, True)}  # no choice made, GPC, ids stored
    stored = stored_consent(collector, tab.aid, 2)
    assert {(r["consent"], r["consent_dnt"], r["consent_cookieless"]) for r in stored} == {("none", True, False)}
    # data teams filter on it
    n = collector.sql(f"SELECT count() AS n FROM trailmark.events WHERE anonymous_id = '{tab.aid}' AND NOT consent_dnt")
    assert n == [{"n": 0}]


def test_cookieless_is_stored(collector: Server, site: Site, tab: Tab) -> None:
    site.attrs["cookieless"] = ""
    tab.goto("basic.html")
    tab.page.click("button.cta")
    assert set(sent_consent(tab, 2)) == {(None, False, False)}  # ids in memory only
    stored = stored_consent(collector, tab.sent[0]["anonymousId"], 2)
    assert {(r["consent"], r["consent_dnt"], r["consent_cookieless"]) for r in stored} == {("none", False, True)}
