"""On Kafka, with the stages as separate processes: an event 300 arrays deep is dead-lettered by
the enricher (it cannot write it to the enriched topic) and by the journey builder (a record of
another producer on the enriched topic), with no restart, and the events after it are stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.kafka import conftest as kafka_conftest
from tests.kafka.pipeline import T0, Pipeline, page
from tests.kafka.test_faults import _produce
from tests.kafka.test_stages import post, read_topic
from tests.robustness.helpers import json_with

pytestmark = pytest.mark.kafka
broker = kafka_conftest.kafka_bootstrap  # the real-broker fixture (tests/kafka/conftest.py), here as "broker"
DEEP = "[" * 300 + "]" * 300


@pytest.fixture
def pipeline(tmp_path: Path, broker: str) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, broker)
    try:
        yield p.start()
    finally:
        p.close()


def test_events_no_serializer_can_write_are_dead_lettered_on_kafka(pipeline: Pipeline, broker: str) -> None:
    env, sid = pipeline.env, pipeline.site["site_id"]
    key = f"{sid}:p1".encode()
    raw = json_with(
        {
            "v": 1,
            "site_id": sid,
            "received_at": datetime.now(UTC).isoformat(),
            "ip": "203.0.113.9",
            "user_agent": "pytest",
            "body": {
                "batch": [
                    {
                        "type": "track",
                        "event": "Deep",
                        "anonymousId": "p1",
                        "messageId": "deep-raw",
                        "properties": {"a": "@deep@"},
                    }
                ]
            },
        },
        deep=DEEP,
    )
    enriched = json_with(
        {"v": 1, "site_id": sid, "anonymous_id": "p1", "message_id": "deep-enriched", "properties": {"a": "@deep@"}},
        deep=DEEP,
    )
    asyncio.run(_produce(broker, env["TRAILMARK_BUS__TOPIC_RAW"], [(key, raw)]))
    asyncio.run(_produce(broker, env["TRAILMARK_BUS__TOPIC_ENRICHED"], [(key, enriched)]))
    later = [page("p1", i, T0) for i in range(1, 4)]
    assert post(pipeline.collector.url, pipeline.site["write_key"], later).status_code == 200

    pipeline.wait_stored({e["messageId"] for e in later})
    dead = [orjson.loads(v) for _, v, _ in read_topic(broker, env["TRAILMARK_BUS__TOPIC_DEAD_LETTER"], 2)]
    by_stage = {d["stage"]: d for d in dead}
    assert set(by_stage) == {"enrich", "journeys"}, dead
    assert "deep-raw" in by_stage["enrich"]["payload"] and "cannot be written as JSON" in by_stage["enrich"]["reason"]
    assert "deep-enriched" in by_stage["journeys"]["payload"] and "repr" in by_stage["journeys"]["reason"]
    for stage in (pipeline.enricher, pipeline.journeys):
        assert stage.metric("trailmark_stage_restarts_total") == 0, stage.tail()
