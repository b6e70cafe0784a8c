"""The enricher asks for company lookups and never waits: which domains it asks for, once each,
and a full queue drops instead of blocking."""

from __future__ import annotations

import time

from enrich import Enricher, EnrichSettings
from enrich.companies import LookupRequests
from tests.enrich.helpers import page_event


def enricher(wanted: LookupRequests) -> Enricher:
    return Enricher(EnrichSettings(geo=False, user_agent=False, bots=False), lookups=wanted)


def test_company_emails_and_website_traits_are_asked_for_free_mail_never() -> None:
    wanted = LookupRequests()
    e = enricher(wanted)
    e.enrich(page_event(type="identify", traits={"email": "jane@acme-jsonld.example"}))
    e.enrich(page_event(type="identify", traits={"email": "joe@gmail.com"}))
    e.enrich(page_event(type="identify", traits={"email": "x@mailinator.com"}))
    # an account's website (group call) and a person's company domain trait
    e.enrich(page_event(type="group", site_id="s2", traits={"website": "https://www.Acme.io/about"}))
    e.enrich(page_event(type="identify", traits={"company": {"domain": "widgets.co.uk"}}))
    e.enrich(page_event(type="identify", traits={"website": "gmail.com"}))
    assert wanted.take(10) == [("site1", "acme-jsonld.example"), ("s2", "acme.io"), ("site1", "widgets.co.uk")]


def test_a_domain_is_asked_for_once_per_refresh_age() -> None:
    wanted = LookupRequests(refresh_age_s=3600)
    e = enricher(wanted)
    for _ in range(100):
        e.enrich(page_event(type="identify", traits={"email": "jane@acme.io"}))
    e.enrich(page_event(type="identify", site_id="other", traits={"email": "jane@acme.io"}))
    assert wanted.take(10) == [("site1", "acme.io"), ("other", "acme.io")]
    e.enrich(page_event(type="identify", traits={"email": "jane@acme.io"}))
    assert wanted.take(10) == []  # taken by the worker already: not asked again within the age


def test_a_full_queue_drops_new_domains_without_waiting() -> None:
    wanted = LookupRequests(queue_size=3)
    e = enricher(wanted)
    started = time.perf_counter()
    for i in range(1000):
        e.enrich(page_event(type="identify", traits={"email": f"a@company{i}.com"}))
    assert time.perf_counter() - started < 2.0
    assert len(wanted) == 3
    assert wanted.dropped == 997
    assert [d for _, d in wanted.take(10)] == ["company0.com", "company1.com", "company2.com"]
    e.enrich(page_event(type="identify", traits={"email": "a@company5.com"}))
    assert wanted.take(10) == [("site1", "company5.com")]  # a dropped domain is asked for again later


def test_lookups_off_means_no_step() -> None:
    e = Enricher(EnrichSettings(geo=False))
    assert "company_lookup" not in [name for name, _ in e._steps]
