"""Dead-letter replay on a real broker, the three stages as separate processes: a journey-builder
dead letter goes back to the enriched topic (as it was), an enricher one to the raw topic; after the
fix the event is stored exactly once, and a forced second replay stores nothing new."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.deadletters.helpers import (
    ADD_CONSTRAINT,
    DROP_CONSTRAINT,
    POISON,
    alter_storage,
    listed,
    replayed,
    track,
    wait,
)
from tests.kafka.pipeline import Pipeline
from tests.kafka.test_stages import _read_topic, enriched_events, post
from trailmark.bus.kafka import KafkaBus
from trailmark.settings import BusSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TOKEN = "adm-" + "k" * 28


@pytest.fixture
def pipeline(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, kafka_bootstrap, TRAILMARK_ADMIN_TOKEN=TOKEN)
    try:
        yield p.start()
    finally:
        p.close()


async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    bus = KafkaBus(bootstrap, BusSettings(kind="kafka"))
    await bus.start()
    try:
        await bus.producer().send_batch(topic, [(key, value)])
    finally:
        await bus.stop()


def enriched_copies(bootstrap: str, topic: str, message_id: str) -> int:
    records = asyncio.run(_read_topic(bootstrap, topic, 10**6, timeout_s=60, idle_s=2))
    return sum(1 for _, value, _ in records for ev in enriched_events(value) if ev.get("message_id") == message_id)


def test_replay_on_kafka_goes_to_the_topic_each_stage_reads(pipeline: Pipeline, kafka_bootstrap: str) -> None:
    env = {"TRAILMARK_ADMIN_TOKEN": TOKEN}
    journeys = pipeline.journeys
    journeys.terminate()
    alter_storage(journeys.data_dir, ADD_CONSTRAINT)  # the cause: storage refuses one event name
    journeys.start()
    via = ("--url", journeys.url)
    site = pipeline.site
    events = [track("k1", "ok-1", "Viewed"), track("k1", "bad-1", POISON), track("k1", "ok-2", "Viewed")]
    assert post(pipeline.collector.url, site["write_key"], events).status_code == 200
    # an event the enricher refuses (no type) in a raw record: an enrich-stage dead letter of the item
    unreadable = {
        "v": 1,
        "site_id": site["site_id"],
        "received_at": datetime.now(UTC).isoformat(),
        "ip": "",
        "user_agent": "pytest",
        "body": {"batch": [{"anonymousId": "k2", "messageId": "raw-1"}]},
    }
    asyncio.run(
        _produce(
            kafka_bootstrap,
            pipeline.env["TRAILMARK_BUS__TOPIC_RAW"],
            f"{site['site_id']}:k2".encode(),
            orjson.dumps(unreadable),
        )
    )
    pipeline.wait_stored({"ok-1", "ok-2"})
    dead = wait(lambda: (rows := listed(*via, env=env)) and len(rows) == 2 and rows, "two dead letters")
    assert sorted((r["stage"], r["payload_type"]) for r in dead) == [
        ("enrich", "client_event"),
        ("journeys", "enriched_event"),
    ]

    journeys.terminate()
    alter_storage(journeys.data_dir, DROP_CONSTRAINT)  # the fix
    journeys.start()
    assert replayed(*via, env=env) == 2
    pipeline.wait_stored({"ok-1", "ok-2", "bad-1"})
    enriched_topic = pipeline.env["TRAILMARK_BUS__TOPIC_ENRICHED"]
    assert enriched_copies(kafka_bootstrap, enriched_topic, "bad-1") == 2  # the original, and the replay as it was
    # the item went back to the raw topic in a raw batch: the enricher read it and (unfixed) dead-lettered
    # it again
    again = wait(
        lambda: [r for r in listed(*via, "--stage", "enrich", env=env) if r["replays"] == 0],
        "the event dead-lettered again",
    )
    assert len(again) == 1 and again[0]["payload_type"] == "client_event"

    assert replayed(*via, "--payload-type", "enriched_event", env=env) == 0  # replayed before: nothing to do
    assert replayed(*via, "--payload-type", "enriched_event", "--again", env=env) == 1
    # a later event of the same visitor lands on the same enriched partition after the replay
    assert post(pipeline.collector.url, site["write_key"], [track("k1", "after-1", "Viewed")]).status_code == 200
    stored = pipeline.wait_stored({"ok-1", "ok-2", "bad-1", "after-1"})
    assert sorted(stored) == ["after-1", "bad-1", "ok-1", "ok-2"]  # each once: the second replay stored nothing
    assert enriched_copies(kafka_bootstrap, enriched_topic, "bad-1") == 3
    assert [r["payload_type"] for r in listed(*via, "--stage", "journeys", env=env)] == ["enriched_event"]  # none new
