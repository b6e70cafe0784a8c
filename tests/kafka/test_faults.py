"""Faults on a real broker: stages killed -9, the broker stopped for 20 s, poison records.

In each case every event the collector acknowledged (200) is counted in trailmark.events, exactly
once; at-least-once delivery plus the journey builder's messageId check make retries invisible.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.kafka.conftest import KAFKA_SH
from tests.kafka.pipeline import T0, Pipeline, Poster, Stage, page
from tests.kafka.test_stages import _read_topic, enriched_events, post, read_topic
from trailmark.bus.kafka import KafkaBus
from trailmark.settings import BusSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def pipeline(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, kafka_bootstrap)
    try:
        yield p.start()
    finally:
        p.close()


def assert_exactly_once(pipeline: Pipeline, *posters: Poster, timeout: float = 120) -> list[str]:
    acked = [m for p in posters for m in p.acked]
    assert acked, "nothing was acknowledged"
    stored = pipeline.wait_stored(set(acked), timeout=timeout)
    dupes = len(stored) - len(set(stored))
    assert dupes == 0, f"{dupes} events stored twice"
    assert sorted(stored) == sorted(set(acked)), "stored events differ from the acknowledged ones"
    return stored


def test_kill9_enricher_and_journey_builder_mid_stream(pipeline: Pipeline) -> None:
    poster = Poster(pipeline.collector.url, pipeline.site["write_key"], [f"k{i}" for i in range(10)], pause_s=0.005)
    poster.start()
    try:
        time.sleep(3)
        for stage in (pipeline.enricher, pipeline.journeys):
            before = len(poster.acked)
            stage.kill()
            time.sleep(1.5)
            stage.start()
            time.sleep(3)
            assert len(poster.acked) > before, "the collector kept accepting"
        pipeline.enricher.kill()  # both at once
        pipeline.journeys.kill()
        time.sleep(1)
        pipeline.journeys.start()
        pipeline.enricher.start()
        time.sleep(2)
    finally:
        poster.finish()
    stored = assert_exactly_once(pipeline, poster)
    assert len(stored) > 1000, len(stored)


class Broker:
    """A broker of the test's own (deploy/kafka/kafka.sh with a private run dir) that can be
    stopped and started again over the same data and port (KAFKA_KEEP_DATA=1)."""

    def __init__(self, run_dir: Path) -> None:
        self.env = {**os.environ, "KAFKA_RUN_DIR": str(run_dir)}
        self.run_dir = run_dir
        self.bootstrap = ""

    def _sh(self, cmd: str, **env: str) -> str:
        done = subprocess.run(
            ["bash", str(KAFKA_SH), cmd],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"kafka.sh {cmd}: {done.stdout}\n{done.stderr}"
        return done.stdout.strip().splitlines()[-1]

    def start(self, keep: bool = False) -> str:
        last = self._sh("start", KAFKA_KEEP_DATA="1" if keep else "0")
        bootstrap = last.removeprefix("bootstrap=")
        assert not self.bootstrap or bootstrap == self.bootstrap, "restart moved the broker's port"
        self.bootstrap = bootstrap
        return bootstrap

    def stop(self) -> None:
        self._sh("stop")


@pytest.fixture
def own_broker(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Broker]:
    del kafka_bootstrap  # only for its skip / fail-in-CI rules (java present)
    broker = Broker(Path(tmp_path) / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.run_dir, ignore_errors=True)


def test_broker_down_for_20s_while_posting(tmp_path: Path, own_broker: Broker) -> None:
    # Two collectors on the same topics: the default one spools to disk while the broker is down
    # (and answers 200); one with TRAILMARK_BUS__SPOOL=false answers 503 + Retry-After instead.
    pipeline = Pipeline(tmp_path, own_broker.bootstrap, TRAILMARK_BUS__REQUEST_TIMEOUT_S="4")
    plain = Stage(["collector"], tmp_path / "plain" / "data", {**pipeline.env, "TRAILMARK_BUS__SPOOL": "false"})
    pipeline.start()
    try:
        plain.data_dir.mkdir(parents=True)
        shutil.copy(pipeline.journeys.data_dir / "keys.json", plain.data_dir / "keys.json")
        plain.start()
        key = pipeline.site["write_key"]
        spooled = Poster(pipeline.collector.url, key, [f"s{i}" for i in range(6)], pause_s=0.02)
        retried = Poster(plain.url, key, [f"r{i}" for i in range(6)], pause_s=0.02)
        spooled.start()
        retried.start()
        time.sleep(3)
        own_broker.stop()
        down = time.monotonic()
        time.sleep(5)
        n_down = len(spooled.acked)
        # The spool survives kill -9: restart the collector while the broker is still down.
        pipeline.collector.kill()
        pipeline.collector.start()
        time.sleep(max(0.0, 20 - (time.monotonic() - down)))
        acked_while_down = len(spooled.acked) - n_down
        retried_while_down = retried.statuses.get(503, 0)
        assert own_broker.start(keep=True) == own_broker.bootstrap
        time.sleep(5)
        spooled.finish()
        retried.finish()

        assert acked_while_down > 50, f"the spooling collector acknowledged only {acked_while_down} while down"
        assert retried_while_down > 0 and retried.retry_after == {"5"}, retried.statuses
        stored = assert_exactly_once(pipeline, spooled, retried)
        assert len(stored) > 1000, len(stored)

        deadline = time.time() + 30
        while pipeline.collector.metric("trailmark_spool_active") != 0:
            assert time.time() < deadline, pipeline.collector.tail()
            time.sleep(0.5)
        assert pipeline.collector.metric("trailmark_spool_replayed_records_total") > 0
        assert pipeline.collector.metric("trailmark_spool_pending_records") == 0
        assert plain.metric("trailmark_produce_errors_total") > 0

        # Replay kept each visitor's order: first occurrences on the enriched topic follow post order
        # (a batch retried after the collector was killed may appear twice; the builder skips it).
        records = asyncio.run(_read_all(own_broker.bootstrap, pipeline.env["TRAILMARK_BUS__TOPIC_ENRICHED"]))
        first: dict[str, list[str]] = defaultdict(list)
        seen: set[str] = set()
        for _, value, _ in records:
            for ev in enriched_events(value):
                if ev["message_id"] not in seen:
                    seen.add(ev["message_id"])
                    first[ev["anonymous_id"]].append(ev["message_id"])
        posted: dict[str, list[str]] = defaultdict(list)
        for m in [*spooled.acked, *retried.acked]:
            posted[m.rsplit("-", 1)[0]].append(m)
        assert dict(first) == dict(posted)
    finally:
        plain.terminate()
        pipeline.close()


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, int]]:
    """Every record of a topic: read until nothing new arrives for 3 s."""
    return await _read_topic(bootstrap, topic, 10**9, timeout_s=120, idle_s=3)


def _raw(site_id: str, events: list[object]) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "site_id": site_id,
            "received_at": datetime.now(UTC).isoformat(),
            "ip": "203.0.113.9",
            "user_agent": "pytest",
            "body": {"batch": events, "sentAt": None},
        }
    )


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    bus = KafkaBus(bootstrap, BusSettings(kind="kafka"))
    await bus.start()
    try:
        for record in records:  # one by one, so each is its own produce and keeps its place
            await bus.producer().send_batch(topic, [record])
    finally:
        await bus.stop()


def test_poison_records_go_to_dead_letter_and_the_stream_goes_on(pipeline: Pipeline, kafka_bootstrap: str) -> None:
    env, site = pipeline.env, pipeline.site
    sid = site["site_id"]
    key = f"{sid}:p1".encode()
    poison_raw = [
        b"[1, 2, 3]",  # JSON, but not a RawBatch
        _raw(sid, [42]),  # a RawBatch whose event is not an object
        b"\xff\xfe not json",  # neither UTF-8 nor JSON
    ]
    good = [page("p1", i, T0) for i in range(1, 3)]
    asyncio.run(
        _produce(
            kafka_bootstrap,
            env["TRAILMARK_BUS__TOPIC_RAW"],
            [(key, _raw(sid, [good[0]])), *((key, p) for p in poison_raw), (key, _raw(sid, [good[1]]))],
        )
    )
    # Poison on the enriched topic fails in the journey builder: not JSON, and an event without fields.
    poison_enriched = [b"{not json", orjson.dumps({"v": 1, "site_id": sid, "anonymous_id": "p1"})]
    asyncio.run(_produce(kafka_bootstrap, env["TRAILMARK_BUS__TOPIC_ENRICHED"], [(key, p) for p in poison_enriched]))
    later = [page("p1", i, T0) for i in range(3, 6)] + [page("p2", i, T0) for i in range(6, 8)]
    assert post(pipeline.collector.url, site["write_key"], later[:3]).status_code == 200
    assert post(pipeline.collector.url, site["write_key"], later[3:]).status_code == 200

    expected = {e["messageId"] for e in good + later}
    stored = pipeline.wait_stored(expected)
    assert sorted(stored) == sorted(expected)

    dead = [orjson.loads(v) for _, v, _ in read_topic(kafka_bootstrap, env["TRAILMARK_BUS__TOPIC_DEAD_LETTER"], 5)]
    assert len(dead) == 5, dead
    by_stage: dict[str, list[dict[str, str]]] = defaultdict(list)
    for d in dead:
        assert set(d) >= {"stage", "reason", "payload", "payload_encoding", "failed_at", "version"}, d
        assert d["reason"], d
        by_stage[d["stage"]].append(d)
    payloads = {
        (d["payload"].encode() if d["payload_encoding"] == "utf-8" else base64.b64decode(d["payload"])): d
        for d in by_stage["enrich"]
    }
    # unreadable records are kept whole; of a readable batch only the item that is not an event
    assert set(payloads) == {poison_raw[0], b"42", poison_raw[2]}, "the enricher's dead letters carry the records"
    assert payloads[b"42"]["kind"] == "invalid" and "not an event" in payloads[b"42"]["reason"]
    for whole in (poison_raw[0], poison_raw[2]):
        assert payloads[whole]["kind"] == "unreadable" and "unreadable raw batch" in payloads[whole]["reason"]
    assert {d["site_id"] for d in dead} == {sid}, "dead letters know their site (from the bus key)"
    assert len(by_stage["journeys"]) == 2, by_stage
    assert any("not JSON" in d["reason"] for d in by_stage["journeys"]), by_stage["journeys"]

    # ... and on into ClickHouse, where they can be queried.
    deadline = time.time() + 20
    while len(rows := pipeline.sql("SELECT stage, reason FROM trailmark.dead_letters ORDER BY stage")) < 5:
        assert time.time() < deadline, rows
        time.sleep(0.3)
    assert [r["stage"] for r in rows] == ["enrich"] * 3 + ["journeys"] * 2
    assert pipeline.enricher.metric("trailmark_stage_records_total", stage="enrich", outcome="dead_letter") == 3
    assert pipeline.journeys.metric("trailmark_stage_records_total", stage="journeys", outcome="dead_letter") == 2
