"""Sessions, touchpoints, identities and stages from the real builder on chDB, by hand."""

from __future__ import annotations

from tests.journeys.conftest import IPHONE, Journey


def test_sessions_split_by_inactivity_and_campaign_change(journey: Journey) -> None:
    j = journey
    j.send(
        j.event(
            "page",
            "a",
            0,
            path="/",
            query="?utm_source=google&utm_medium=cpc&utm_campaign=spring",
            referrer="https://www.google.com/",
        ),
        j.event("page", "a", 10, path="/pricing", referrer="https://shop.example.com/"),
        j.event("page", "a", 39, path="/docs"),  # 29 min idle: same session
        j.event("page", "a", 70, path="/blog"),  # 31 min idle: new session (Direct)
        j.event("page", "a", 75, path="/", query="?utm_source=newsletter&utm_medium=email&utm_campaign=nov"),
        j.event("page", "a", 76, path="/", query="?gclid=abc123"),  # a click id: a new campaign
    )
    rows = j.sql(
        "SELECT entry_page, exit_page, pageviews, channel, source, medium, campaign FROM {db}.sessions ORDER BY start"
    )
    assert [(r["entry_page"], r["exit_page"], r["pageviews"]) for r in rows] == [
        ("/", "/docs", 3),
        ("/blog", "/blog", 1),
        ("/", "/", 1),
        ("/", "/", 1),
    ]
    assert [(r["channel"], r["source"], r["medium"], r["campaign"]) for r in rows][:3] == [
        ("Paid Search", "google", "cpc", "spring"),
        ("Direct", "(direct)", "(none)", ""),
        ("Email", "newsletter", "email", "nov"),
    ]
    assert rows[3]["channel"] == "Paid Search"
    starts = j.sql("SELECT count() AS n FROM {db}.touchpoints WHERE kind = 'session_start'")
    assert starts == [{"n": 4}]


def test_a_new_external_referrer_starts_a_session(journey: Journey) -> None:
    j = journey
    j.send(
        j.event("page", "r", 0, path="/", referrer="https://blog.example.net/post"),
        j.event("page", "r", 5, path="/a", referrer="https://www.facebook.com/"),
    )
    rows = j.sql("SELECT referrer_host, channel FROM {db}.sessions ORDER BY start")
    assert [r["channel"] for r in rows] == ["Referral", "Organic Social"]


def test_session_timeout_is_configurable(storage: object) -> None:
    j = Journey(storage, session_timeout_s=300)  # type: ignore[arg-type]
    j.send(j.event("page", "t", 0), j.event("page", "t", 6))
    assert j.sql("SELECT count() AS n FROM {db}.sessions") == [{"n": 2}]


def test_stitching_is_retroactive_across_two_devices(journey: Journey) -> None:
    j = journey
    # laptop visits twice anonymously, phone visits once anonymously
    j.send(j.event("page", "laptop", 0, path="/"), j.event("page", "laptop", 120, path="/pricing"))
    j.send(j.event("page", "phone", 200, path="/", ua=IPHONE))
    assert {r["contact_id"] for r in j.sql("SELECT contact_id FROM {db}.sessions")} == {"anon:laptop", "anon:phone"}
    # the laptop identifies; later the phone logs in as the same user
    j.send(j.event("identify", "laptop", 130, user_id="u42", traits={"email": "Ann@Acme.io"}))
    j.send(j.event("identify", "phone", 210, user_id="u42", ua=IPHONE))
    rows = j.sql("SELECT contact_id, anonymous_id, device FROM {db}.sessions ORDER BY start")
    assert [r["contact_id"] for r in rows] == ["user:u42"] * 3
    assert [r["anonymous_id"] for r in rows] == ["laptop", "laptop", "phone"]
    assert rows[2]["device"] == "mobile"
    links = j.sql("SELECT anonymous_id, contact_id FROM {db}.identity_map ORDER BY anonymous_id")
    assert links == [
        {"anonymous_id": "laptop", "contact_id": "user:u42"},
        {"anonymous_id": "phone", "contact_id": "user:u42"},
    ]
    contact = j.sql("SELECT email, email_domain, company_domain, user_id FROM {db}.contacts")
    assert contact == [
        {"email": "ann@acme.io", "email_domain": "acme.io", "company_domain": "acme.io", "user_id": "u42"}
    ]


def test_an_email_contact_merges_into_the_user_contact(journey: Journey) -> None:
    j = journey
    j.send(
        j.event("page", "x", 0), j.event("identify", "x", 1, traits={"email": "bo@corp.example", "name": "Bo Smith"})
    )
    assert j.sql("SELECT DISTINCT contact_id FROM {db}.sessions") == [{"contact_id": "email:bo@corp.example"}]
    j.send(j.event("page", "y", 50), j.event("identify", "y", 51, user_id="u7", traits={"email": "bo@corp.example"}))
    assert j.sql("SELECT DISTINCT contact_id FROM {db}.sessions") == [{"contact_id": "user:u7"}]
    merged = j.sql("SELECT first_name, last_name, email FROM {db}.contacts WHERE contact_id = 'user:u7'")
    assert merged == [{"first_name": "Bo", "last_name": "Smith", "email": "bo@corp.example"}]


def test_stage_transitions_from_the_default_rules(journey: Journey) -> None:
    j = journey
    j.send(
        j.event("page", "s", 0, path="/"),  # first visit: Awareness
        j.event("page", "s", 2, path="/pricing"),  # Consideration
        j.event("page", "s", 3, path="/checkout"),  # Decision
        j.event("track", "s", 4, event="Order Completed"),  # a purchase (conversion)
        j.event("page", "s", 600, path="/account"),  # a later return after the purchase: Retention
        j.event("track", "s", 601, event="Review Submitted"),  # Advocacy
    )
    rows = j.sql(
        "SELECT stage, rule, toUnixTimestamp(entered_at) - toUnixTimestamp(min(entered_at) OVER ())"
        " AS after_s FROM {db}.stage_transitions ORDER BY entered_at"
    )
    assert [(r["stage"], r["after_s"]) for r in rows] == [
        ("Awareness", 0),
        ("Consideration", 120),
        ("Decision", 180),
        ("Retention", 36000),
        ("Advocacy", 36060),
    ]
    assert rows[3]["rule"] == "return after purchase"
    tps = j.sql("SELECT kind, event, stage FROM {db}.touchpoints ORDER BY timestamp, kind")
    assert ("conversion", "Order Completed", "Decision") in [(t["kind"], t["event"], t["stage"]) for t in tps]


def test_second_session_means_consideration(journey: Journey) -> None:
    j = journey
    j.send(j.event("page", "c", 0, path="/blog"), j.event("page", "c", 100, path="/blog/2"))
    rows = j.sql("SELECT stage, rule FROM {db}.stage_transitions ORDER BY entered_at")
    assert rows == [{"stage": "Awareness", "rule": "first visit"}, {"stage": "Consideration", "rule": "second session"}]


def test_bots_stay_out_of_journeys(journey: Journey) -> None:
    j = journey
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    j.send(j.event("page", "g", 0, ua=bot), j.event("page", "h", 0))
    assert j.sql("SELECT anonymous_id, is_bot FROM {db}.events ORDER BY anonymous_id") == [
        {"anonymous_id": "g", "is_bot": True},
        {"anonymous_id": "h", "is_bot": False},
    ]
    assert j.sql("SELECT anonymous_id FROM {db}.sessions") == [{"anonymous_id": "h"}]


def test_redelivered_events_are_written_once(journey: Journey) -> None:
    j = journey
    events = j.enrich([j.event("page", "d", 0), j.event("track", "d", 1, event="Signed Up")])
    j.builder.process(events)
    j.builder.process(events)  # at-least-once delivery: the same records again
    fresh = Journey(j.storage)  # and after a restart, with nothing in memory
    fresh.builder.process(events)
    assert j.sql("SELECT count() AS n FROM {db}.events") == [{"n": 2}]
    assert j.sql("SELECT count() AS n, sum(conversions) AS c FROM {db}.sessions") == [{"n": 1, "c": 1}]


def test_a_restarted_builder_continues_the_open_session(journey: Journey) -> None:
    j = journey
    j.send(j.event("page", "k", 0, path="/"))
    later = Journey(j.storage)
    later.send(later.event("page", "k", 10, path="/two"))
    assert j.sql("SELECT pageviews, entry_page, exit_page FROM {db}.sessions") == [
        {"pageviews": 2, "entry_page": "/", "exit_page": "/two"}
    ]
