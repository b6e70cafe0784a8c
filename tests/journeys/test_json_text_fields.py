"""On the enriched topic an event's JSON-object fields (properties, traits, context, extra) travel as
their JSON text (schemas.JSON_TEXT_FIELDS), so the Kafka journey builder neither builds their
objects nor writes them back. The builder must store exactly what it stores from the objects
themselves (the embedded mode hands it objects): the same events, contacts and accounts (traits
are read from the text of identify and group calls), the same consent columns and consent
aggregates (consent is read from the text of the context). One stream goes through the real
enrichment stage twice, for two sites: as objects (``EnrichStage.process``) and as the records
Kafka carries (``EnrichStage.serialized`` read back by ``parse_enriched``). On chDB and on a
ClickHouse server."""

from __future__ import annotations

from typing import Any

import orjson

from journey_builder.builder import JourneyBuilder
from journey_builder.privacy import ConsentPolicies, ConsentPolicy
from tests.journeys.conftest import CHROME, T0, Journey
from trailmark.bus.base import Message
from trailmark.runtime import EnrichStage, parse_enriched
from trailmark.settings import JourneySettings, Settings
from trailmark.storage.base import Storage

GRANTED = [1, False, True]
DENIED = [0, False, True]
# columns that differ between the two sites by design (ids made from the site, write versions)
VOLATILE = {"site_id", "session_id", "touchpoint_id", "version"}


def stream() -> list[dict[str, Any]]:
    j = Journey.event
    events = [
        j("page", "ann", 0, path="/pricing", properties={"plan": "pro", "tags": ["a", "b"]}),
        j("track", "ann", 1, event="Product Viewed", properties={"sku": "S-1", "price": 19.5}),
        j("identify", "ann", 2, user_id="u-ann", traits={"email": "ann@acme.io", "name": "Ann Lee", "n": {"k": 1}}),
        j("group", "ann", 3),
        j("page", "bob", 0, path="/docs"),
        j("identify", "bob", 1, traits={"email": "bob@example.org", "plan": "free"}),
        j("page", "cid", 0, path="/"),  # no consent said: kept on an aggregate site
    ]
    events[3].update(groupId="acme", traits={"name": "Acme", "website": "https://www.acme.io/about"})
    events[0]["integrations"] = {"All": True}  # a top-level field without its own column: extra
    for e in events[:4]:
        e["context"]["consent"] = GRANTED
    for e in events[4:6]:
        e["context"]["consent"] = DENIED
    return events


def raw(site: str, events: list[dict[str, Any]]) -> Message:
    batch = {"v": 1, "site_id": site, "received_at": T0.isoformat(), "ip": "81.2.69.142", "user_agent": CHROME}
    return Message("trailmark.raw", 0, 0, f"{site}:x".encode(), orjson.dumps({**batch, "body": {"batch": events}}))


def rows(storage: Storage, table: str, site: str) -> list[tuple[Any, ...]]:
    got = storage.query(f"SELECT * FROM {storage.database}.{table} WHERE site_id = {{s:String}}", {"s": site})
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items() if k not in VOLATILE)) for r in got)


def test_the_builder_stores_the_same_from_json_text_as_from_objects(storage: Storage) -> None:
    stage, events = EnrichStage(Settings(), {}), stream()
    objects = [o.value for o in stage.process([raw("s1", events)]).ok]
    records = stage.serialized([raw("s2", events)]).ok
    texts = [o.value for o in parse_enriched([Message("e", 0, i, r.key, r.value) for i, r in enumerate(records)]).ok]
    assert len(objects) == len(texts) == 7
    assert all(type(e["traits"]) is dict for e in objects) and all(type(e["traits"]) is str for e in texts)
    policies = ConsentPolicies(sites={s: ConsentPolicy("aggregate") for s in ("s1", "s2")})  # type: ignore[arg-type]
    builder = JourneyBuilder(storage, JourneySettings(), policies)
    builder.process(objects)
    builder.process(texts)
    tables = (
        "events",
        "sessions_data",
        "touchpoints_data",
        "identities_data",
        "contacts_data",
        "accounts_data",
        "stage_transitions_data",
        "consent_aggregates",
    )
    for table in tables:
        assert rows(storage, table, "s2") == rows(storage, table, "s1"), table
    # and what was stored is what the objects said (not, say, empty objects on both sides)
    db = storage.database
    (ev,) = storage.query(
        f"SELECT properties, extra, consent FROM {db}.events WHERE site_id = 's2' AND page_path = '/pricing'"
    )
    assert orjson.loads(ev["properties"]) == {"plan": "pro", "tags": ["a", "b"]}
    assert orjson.loads(ev["extra"]) == {"integrations": {"All": True}} and ev["consent"] == "granted"
    (ann,) = storage.query(f"SELECT traits, email FROM {db}.contacts WHERE site_id = 's2'")
    assert orjson.loads(ann["traits"])["n"] == {"k": 1} and ann["email"] == "ann@acme.io"
    (acme,) = storage.query(f"SELECT name, domain FROM {db}.accounts_data WHERE site_id = 's2'")
    assert (acme["name"], acme["domain"]) == ("Acme", "acme.io")
    visitors = storage.query(f"SELECT DISTINCT anonymous_id AS a FROM {db}.events WHERE site_id = 's2' ORDER BY a")
    assert [r["a"] for r in visitors] == ["ann", "cid"]  # bob refused: counted only
