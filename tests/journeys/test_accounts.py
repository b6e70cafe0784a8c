"""Group calls describe accounts, not people; every top-level field a client sends is kept; a client
time sent as ``originalTimestamp`` is the event's time (real Enricher and JourneyBuilder on chDB)."""

from __future__ import annotations

import orjson

from tests.journeys.conftest import Journey


def test_group_traits_go_to_the_account_not_the_person(journey: Journey) -> None:
    j = journey
    j.send(
        j.event(
            "identify",
            "ann-laptop",
            0,
            user_id="u-ann",
            traits={"firstName": "Ann", "lastName": "Lee", "email": "ann@acme.io"},
        )
    )
    group = j.event(
        "group",
        "ann-laptop",
        1,
        user_id="u-ann",
        traits={
            "name": "Acme Inc",
            "website": "https://www.acme.io/about",
            "email": "billing@acme.io",
            "employees": 120,
            "plan": "enterprise",
        },
    )
    group["groupId"] = "g-acme"
    j.send(group)
    contact = j.sql("SELECT first_name, last_name, email, traits FROM {db}.contacts WHERE contact_id = 'user:u-ann'")
    assert [(c["first_name"], c["last_name"], c["email"]) for c in contact] == [("Ann", "Lee", "ann@acme.io")]
    assert "plan" not in orjson.loads(contact[0]["traits"])  # the account's traits are not the person's
    accounts = j.sql("SELECT group_id, name, domain, traits FROM {db}.accounts")
    assert [(a["group_id"], a["name"], a["domain"]) for a in accounts] == [("g-acme", "Acme Inc", "acme.io")]
    assert orjson.loads(accounts[0]["traits"])["employees"] == 120
    # the group event itself carries its traits, but no person fields found in them
    ev = j.sql("SELECT traits, first_name, email FROM {db}.events WHERE type = 'group'")
    assert orjson.loads(ev[0]["traits"])["name"] == "Acme Inc" and (ev[0]["first_name"], ev[0]["email"]) == ("", "")


def test_account_traits_merge_and_members_follow_identity(journey: Journey) -> None:
    j = journey
    first = j.event("group", "bob-phone", 0, traits={"name": "Globex", "industry": "energy"})
    first["groupId"] = "g-globex"
    j.send(first)
    second = j.event("group", "bob-phone", 5, traits={"plan": "pro", "industry": ""})
    second["groupId"] = "g-globex"
    j.send(second)
    account = j.sql("SELECT name, traits, first_seen, last_seen FROM {db}.accounts")
    assert len(account) == 1 and account[0]["name"] == "Globex"
    assert orjson.loads(account[0]["traits"]) == {"name": "Globex", "industry": "energy", "plan": "pro"}
    assert account[0]["first_seen"] < account[0]["last_seen"]
    assert j.sql("SELECT contact_id FROM {db}.account_contacts") == [{"contact_id": "anon:bob-phone"}]
    # the anonymous member identifies later: the link follows it to its contact, retroactively
    j.send(j.event("identify", "bob-phone", 10, user_id="u-bob", traits={"name": "Bob Stone"}))
    members = j.sql("SELECT group_id, contact_id FROM {db}.account_contacts")
    assert members == [{"group_id": "g-globex", "contact_id": "user:u-bob"}]
    names = j.sql("SELECT first_name, last_name FROM {db}.contacts WHERE contact_id = 'user:u-bob'")
    assert names == [{"first_name": "Bob", "last_name": "Stone"}]


def test_top_level_fields_without_a_column_are_kept_in_extra(journey: Journey) -> None:
    j = journey
    ev = j.event("page", "carl", 0)
    ev.update(
        {
            "integrations": {"All": False, "Mixpanel": True},
            "channel": "web",
            "category": "Docs",
            "_metadata": {"bundled": ["Segment.io"]},
            "somethingNew": [1, 2],
            "writeKey": "wk_secret",
        }
    )
    j.send(ev)
    track = j.event("track", "carl", 1, event="Clicked")
    track["name"] = "a track call has no name"
    j.send(track)
    rows = j.sql("SELECT type, extra FROM {db}.events ORDER BY timestamp")
    assert orjson.loads(rows[0]["extra"]) == {
        "integrations": {"All": False, "Mixpanel": True},
        "channel": "web",
        "category": "Docs",
        "_metadata": {"bundled": ["Segment.io"]},
        "somethingNew": [1, 2],
    }
    assert orjson.loads(rows[1]["extra"]) == {"name": "a track call has no name"}


def test_original_timestamp_is_the_client_time_when_timestamp_is_absent(journey: Journey) -> None:
    j = journey
    ev = j.event("track", "dora", 0, event="Clicked")
    client_time = ev.pop("timestamp")
    ev["originalTimestamp"] = client_time
    ev["sentAt"] = client_time  # sent right away: no skew to correct
    j.send(ev)
    row = j.sql("SELECT toString(timestamp) AS t, toString(original_timestamp) AS o FROM {db}.events")[0]
    assert row["t"] == row["o"] == "2026-11-02 09:00:00.000"
