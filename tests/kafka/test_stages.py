"""The stages as separate processes on a real Kafka broker: end to end, ordering, metrics, shutdown.

Each test has its own topics and groups (TRAILMARK_BUS__*), each process its own data dir; the
journey builder owns chDB and answers /v1/sql.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import CHROME_UA
from tests.kafka.pipeline import T0, Pipeline, Poster, Stage, bus_env, page
from trailmark.bus.base import Message
from trailmark.bus.kafka import KafkaBus
from trailmark.runtime import parse_enriched
from trailmark.settings import BusSettings

pytestmark = pytest.mark.kafka


@pytest.fixture
def pipeline(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, kafka_bootstrap, TRAILMARK_BUS__PARTITIONS="4")
    try:
        yield p.start()
    finally:
        p.close()


def post(url: str, key: str, events: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/batch",
        content=orjson.dumps({"batch": events}),
        auth=(key, ""),
        headers={"content-type": "application/json", "user-agent": CHROME_UA},
        timeout=30,
    )


async def _read_topic(
    bootstrap: str, topic: str, n: int, timeout_s: float = 30, idle_s: float | None = None
) -> list[tuple[bytes, bytes, int]]:
    """(key, value, partition) from the start of a topic: ``n`` records, or (with ``idle_s``)
    everything until nothing new came for that long."""
    bus = KafkaBus(bootstrap, BusSettings(kind="kafka"))
    consumer = bus.consumer(topic, f"test-reader-{time.monotonic_ns()}")
    got: list[tuple[bytes, bytes, int]] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while len(got) < n and time.monotonic() < deadline:
            batch = [(m.key, m.value, m.partition) for m in await consumer.poll(1000, 0.5)]
            if batch:
                got += batch
                last = time.monotonic()
            elif idle_s is not None and got and time.monotonic() - last > idle_s:
                break
    finally:
        await consumer.close()
        await bus.stop()
    return got


def enriched_events(value: bytes) -> list[dict[str, Any]]:
    """The events of an enriched-topic record as the journey builder reads them: a run of one
    visitor's events (what the enricher writes) or one event (what a dead-letter replay writes)."""
    read = parse_enriched([Message("enriched", 0, 0, b"", value)])
    assert read.failed == []
    return [dict(o.value) for o in read.ok]


def read_topic(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, bytes, int]]:
    return asyncio.run(_read_topic(bootstrap, topic, n))


async def _partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described}


def test_events_flow_through_three_processes_in_order(pipeline: Pipeline, kafka_bootstrap: str) -> None:
    env, site = pipeline.env, pipeline.site
    visitors = [f"vis{i}" for i in range(8)]
    posted: dict[str, list[str]] = defaultdict(list)
    seq = 0
    # Per visitor: 3 sessions two hours apart, each of 4 requests x 3 page views, posted in order.
    for session in range(3):
        for request in range(4):
            for v in visitors:
                events = []
                for k in range(3):
                    seq += 1
                    at = T0 + timedelta(hours=2 * session, seconds=10 * (request * 3 + k))
                    events.append(page(v, seq, at, path=f"/s{session}/r{request}/{k}"))
                r = post(pipeline.collector.url, site["write_key"], events)
                assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
                posted[v] += [e["messageId"] for e in events]
    expected = {m for ids in posted.values() for m in ids}
    assert len(expected) == 8 * 3 * 4 * 3

    stored = pipeline.wait_stored(expected)
    assert sorted(stored) == sorted(expected), "every event exactly once"

    # The journey builder saw each visitor's events in order: 3 sessions of 12 page views each,
    # entered and left on the session's first and last page.
    rows = pipeline.sql(
        "SELECT anonymous_id, count() AS n, groupArray(pageviews) AS pv, groupArray(entry_page) AS entry,"
        " groupArray(exit_page) AS exit FROM (SELECT * FROM trailmark.sessions ORDER BY start)"
        " GROUP BY anonymous_id ORDER BY anonymous_id"
    )
    assert [r["anonymous_id"] for r in rows] == sorted(visitors)
    for r in rows:
        assert r["n"] == 3 and r["pv"] == [12, 12, 12], r
        assert [e.rsplit("/", 3)[-3:] for e in r["entry"]] == [[f"s{s}", "r0", "0"] for s in range(3)], r
        assert [e.rsplit("/", 3)[-3:] for e in r["exit"]] == [[f"s{s}", "r3", "2"] for s in range(3)], r

    # Through collector -> raw topic -> enricher -> enriched topic, one visitor's records stay in
    # post order on one partition (keyed by site + visitor). A visitor's events of a request (or of
    # consecutive requests) travel as one enriched record, a run (runtime.EnrichStage.serialized).
    requests = 8 * 3 * 4
    topic = env["TRAILMARK_BUS__TOPIC_ENRICHED"]
    records = asyncio.run(_read_topic(kafka_bootstrap, topic, requests, idle_s=3))
    assert sum(len(orjson.loads(value)["rows"]) for _, value, _ in records) == len(expected)
    assert len(records) <= requests
    order: dict[str, list[str]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for key, value, partition in records:
        run = enriched_events(value)
        assert len(run) % 3 == 0, value[:200]
        for ev in run:
            assert key == f"{site['site_id']}:{ev['anonymous_id']}".encode()
            order[ev["anonymous_id"]].append(ev["message_id"])
            partitions[ev["anonymous_id"]].add(partition)
    assert order == posted
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1

    # Topics were created on start with the configured partition count.
    topics = [env[f"TRAILMARK_BUS__TOPIC_{t}"] for t in ("RAW", "ENRICHED", "DEAD_LETTER")]
    assert asyncio.run(_partitions(kafka_bootstrap, topics)) == dict.fromkeys(topics, 4)

    # Every stage process serves Prometheus metrics.
    n = float(len(expected))
    assert pipeline.enricher.metric("trailmark_stage_records_total", stage="enrich", outcome="ok") == n
    assert pipeline.enricher.metric("trailmark_consumer_lag", stage="enrich") == 0
    assert pipeline.enricher.metric(
        "trailmark_produced_records_total", topic=env["TRAILMARK_BUS__TOPIC_ENRICHED"]
    ) == len(records)
    assert pipeline.journeys.metric("trailmark_stage_records_total", stage="journeys", outcome="ok") == n
    assert pipeline.journeys.metric("trailmark_stage_batch_records_count", stage="journeys") >= 1
    assert (
        pipeline.collector.metric("trailmark_produced_records_total", topic=env["TRAILMARK_BUS__TOPIC_RAW"]) == requests
    )
    assert "trailmark_produce_errors_total" in pipeline.collector.metrics()
    assert pipeline.collector.metric("trailmark_produce_errors_total") == 0
    assert pipeline.collector.metric("trailmark_spool_active") == 0


def test_stages_stop_quickly_and_cleanly_on_sigterm_mid_stream(pipeline: Pipeline) -> None:
    site = pipeline.site
    poster = Poster(pipeline.collector.url, site["write_key"], [f"t{i}" for i in range(6)], pause_s=0.01)
    poster.start()
    try:
        time.sleep(2)
        for stage in (pipeline.journeys, pipeline.enricher):
            took = stage.terminate()
            assert took < 5, f"{stage.command} took {took:.1f} s to stop on SIGTERM"
            assert "Traceback" not in stage.tail(100_000), stage.tail()
            assert "stopped " in stage.tail(), stage.tail()
            time.sleep(1)
            stage.start()
            time.sleep(2)
    finally:
        poster.finish()
    assert poster.acked
    stored = pipeline.wait_stored(set(poster.acked))
    assert sorted(stored) == sorted(poster.acked)
    for stage in reversed(pipeline.stages()):
        took = stage.terminate()
        assert took < 5, f"{stage.command} took {took:.1f} s to stop on SIGTERM"
        assert "Traceback" not in stage.tail(100_000), stage.tail()


def test_up_runs_all_stages_in_one_process_on_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = bus_env(kafka_bootstrap)
    del env["TRAILMARK_KAFKA_BOOTSTRAP"]  # given as --kafka instead
    up = Stage(["up", "--bus", "kafka", "--kafka", kafka_bootstrap], tmp_path / "data", env).start()
    try:
        assert up.metric("trailmark_spool_active") == 0  # the Kafka collector (spool-backed)
        key = orjson.loads((tmp_path / "data" / "keys.json").read_bytes())["sites"][0]
        events = [page("solo", i, T0 + timedelta(seconds=i)) for i in range(20)]
        assert post(up.url, key["write_key"], events).status_code == 200
        deadline = time.time() + 30
        while True:
            r = httpx.post(
                f"{up.url}/v1/sql",
                json={"query": "SELECT count() AS n FROM trailmark.events"},
                headers={"authorization": f"Bearer {key['read_key']}"},
                timeout=30,
            )
            if r.json()["rows"][0]["n"] == 20:
                break
            assert time.time() < deadline, r.text
            time.sleep(0.2)
        assert up.metric("trailmark_stage_records_total", stage="enrich", outcome="ok") == 20
    finally:
        took = up.terminate()
    assert took < 5, f"trailmark up --bus kafka took {took:.1f} s to stop on SIGTERM"
    assert "Traceback" not in up.tail(100_000), up.tail()
