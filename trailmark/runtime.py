"""Stage runners: poll the bus, run a stage, write its output, then commit (at-least-once).

A record a stage cannot process becomes a DeadLetter (raw payload, stage, reason, time, version) on
the dead-letter topic and the stream goes on. Only "dependency unavailable" errors are retried, by
not committing.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter, Gauge, Histogram

from enrich import Enricher
from journey_builder.builder import JourneyBuilder
from schemas import SCHEMA_VERSION, DeadLetter, EnrichedEvent, RawBatch, Site, unfold
from trailmark.bus.base import BusUnavailable, Consumer, EventBus, Message
from trailmark.bus.embedded import EmbeddedConsumer
from trailmark.settings import Settings
from trailmark.storage.base import Storage, StorageUnavailable

log = logging.getLogger("trailmark.runtime")

PROCESSED = Counter("trailmark_stage_records_total", "Records handled by a stage", ["stage", "outcome"])
LAG = Gauge("trailmark_consumer_lag", "Records not yet consumed", ["stage"])
BATCH_SIZE = Histogram("trailmark_stage_batch_records", "Records per stage batch", ["stage"],
                       buckets=(1, 10, 100, 1000, 5000, 20000))
BATCH_SECONDS = Histogram("trailmark_stage_batch_seconds", "Seconds per stage batch", ["stage"])


def dead_letter(stage: str, reason: str, payload: bytes) -> bytes:
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode(), "base64"
    record: DeadLetter = {"stage": stage, "reason": reason[:2000], "payload": text,
                          "payload_encoding": encoding,  # type: ignore[typeddict-item]
                          "failed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                          "version": SCHEMA_VERSION}
    return orjson.dumps(record)


class StageRunner:
    stage = "stage"

    def __init__(self, bus: EventBus, settings: Settings, topic: str, group: str, batch: int) -> None:
        self.bus = bus
        self.settings = settings
        self.topic = topic
        self.group = group
        self.batch = batch
        self.stopping = asyncio.Event()
        self.consumer: Consumer | None = None

    async def handle(self, messages: Sequence[Message]) -> None:
        raise NotImplementedError

    linger_s = 0.0

    async def _gather(self, consumer: Consumer) -> list[Message]:
        """One batch: the first records (waiting up to flush_interval_s), then whatever else arrives
        within ``linger_s``, up to ``batch`` records. A stage with a fixed cost per batch (the journey
        builder's lookups and inserts) then writes fewer, larger batches under load."""
        messages = await consumer.poll(self.batch, self.settings.storage.flush_interval_s)
        if not messages or self.linger_s <= 0:
            return messages
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while len(messages) < self.batch and (remaining := deadline - loop.time()) > 0:
            more = await consumer.poll(self.batch - len(messages), remaining)
            if not more:
                break
            messages += more
        return messages

    async def _until_done(self, step: Callable[[], Awaitable[None]]) -> bool:
        """Run ``step``, retrying while a dependency is unavailable; False if stopped meanwhile."""
        backoff = 0.2
        while True:
            try:
                await step()
                return True
            except (BusUnavailable, StorageUnavailable) as exc:
                log.warning("%s: dependency unavailable, retrying: %s", self.stage, exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
                if self.stopping.is_set():
                    return False

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on shutdown."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def run(self) -> None:
        self.consumer = self.bus.consumer(self.topic, self.group)
        backoff = 0.2
        try:
            while not self.stopping.is_set():
                try:
                    messages = await self._gather(self.consumer)
                except BusUnavailable as exc:
                    log.warning("%s: cannot poll, retrying: %s", self.stage, exc)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                LAG.labels(self.stage).set(self.consumer.lag())
                if not messages:
                    continue
                started = time.perf_counter()
                if not await self._until_done(functools.partial(self.handle, messages)):
                    return  # stopping, not committed: redelivered on restart
                backoff = 0.2
                try:
                    await self.consumer.commit()
                except BusUnavailable as exc:  # offsets stay pending: the next commit carries them
                    log.warning("%s: commit failed, will retry with the next batch: %s", self.stage, exc)
                BATCH_SIZE.labels(self.stage).observe(len(messages))
                BATCH_SECONDS.labels(self.stage).observe(time.perf_counter() - started)
        finally:
            await self.consumer.close()


class EnrichRunner(StageRunner):
    stage = "enrich"

    def __init__(self, bus: EventBus, settings: Settings, sites: dict[str, Site]) -> None:
        super().__init__(bus, settings, settings.bus.topic_raw, settings.bus.group_enrich, 5000)
        self.enricher = Enricher(settings.enrich)
        self.sites = sites

    def enrich(
        self, messages: Sequence[Message]
    ) -> tuple[list[tuple[bytes, EnrichedEvent]], list[tuple[bytes, bytes]]]:
        """(key, enriched event) for every event of the raw batches, and the dead letters."""
        good: list[tuple[bytes, EnrichedEvent]] = []
        bad: list[tuple[bytes, bytes]] = []
        enrich = self.enricher.enrich
        for m in messages:
            try:
                batch: RawBatch = orjson.loads(m.value)
                events = unfold(batch)
                site = self.sites.get(batch["site_id"])
            except Exception as exc:  # an unreadable record is dead-lettered whole
                bad.append((m.key, dead_letter(self.stage, f"unreadable raw batch: {type(exc).__name__}: {exc}",
                                               m.value)))
                continue
            for raw in events:
                try:
                    good.append((m.key, enrich(raw, site)))
                except Exception as exc:  # one event's failure is that event's dead letter
                    bad.append((m.key, dead_letter(self.stage, f"{type(exc).__name__}: {exc}", orjson.dumps(raw))))
        return good, bad

    async def handle(self, messages: Sequence[Message]) -> None:
        good, bad = self.enrich(messages)
        producer = self.bus.producer()
        await producer.send_batch(self.settings.bus.topic_enriched, [(k, orjson.dumps(e)) for k, e in good])
        await producer.send_batch(self.settings.bus.topic_dead_letter, bad)
        PROCESSED.labels(self.stage, "ok").inc(len(good))
        PROCESSED.labels(self.stage, "dead_letter").inc(len(bad))


class JourneyRunner(StageRunner):
    stage = "journeys"

    def __init__(self, bus: EventBus, settings: Settings, storage: Storage) -> None:
        super().__init__(bus, settings, settings.bus.topic_enriched, settings.bus.group_journeys,
                         settings.storage.batch_rows)
        self.storage = storage
        self.linger_s = settings.bus.journeys_linger_ms / 1000
        self.builder = JourneyBuilder(storage, settings.journeys)

    async def handle(self, messages: Sequence[Message]) -> None:
        events: list[EnrichedEvent] = []
        bad: list[tuple[bytes, bytes]] = []
        for m in messages:
            try:
                events.append(orjson.loads(m.value))
            except orjson.JSONDecodeError as exc:
                bad.append((m.key, dead_letter(self.stage, f"not JSON: {exc}", m.value)))
        bad += await self.build(events)
        await self.bus.producer().send_batch(self.settings.bus.topic_dead_letter, bad)
        PROCESSED.labels(self.stage, "ok").inc(len(events))
        PROCESSED.labels(self.stage, "dead_letter").inc(len(bad))

    async def build(self, events: list[EnrichedEvent]) -> list[tuple[bytes, bytes]]:
        """Write the events' journeys; the dead letters of those that cannot be written."""
        try:
            await asyncio.to_thread(self.builder.process, events)
        except StorageUnavailable:
            raise
        except Exception as exc:  # find the records that fail, dead-letter them, keep the rest
            log.warning("journeys: batch failed (%s), retrying record by record", exc)
            return await self._one_by_one(events)
        return []

    async def _one_by_one(self, events: list[EnrichedEvent]) -> list[tuple[bytes, bytes]]:
        bad = []
        for ev in events:
            try:
                await asyncio.to_thread(self.builder.process, [ev])
            except StorageUnavailable:
                raise
            except Exception as exc:
                bad.append((b"", dead_letter(self.stage, f"{type(exc).__name__}: {exc}", orjson.dumps(ev))))
                self.builder.forget(ev)
        return bad


class InProcessRunner(StageRunner):
    """Embedded mode: enrichment hands its events to the journey builder in memory.

    Same stage functions as the separate runners, without the enriched topic in between: the
    enriched records would only be written to and read back from the same SQLite file by the same
    process. The raw offset is committed once the journeys are written (at-least-once holds), and
    enrichment runs in the worker thread with the builder, so the collector's event loop stays free.
    """

    stage = "enrich+journeys"

    def __init__(self, bus: EventBus, settings: Settings, sites: dict[str, Site], storage: Storage) -> None:
        # raw records are request batches (a browser sends up to ~50 events in one): poll about
        # batch_rows events' worth per round
        super().__init__(bus, settings, settings.bus.topic_raw, settings.bus.group_enrich,
                         max(1, settings.storage.batch_rows // 25))
        self.enricher = EnrichRunner(bus, settings, sites)
        self.journeys = JourneyRunner(bus, settings, storage)
        self.linger_s = self.journeys.linger_s

    async def handle(self, messages: Sequence[Message]) -> None:
        good, bad = await asyncio.to_thread(self.enricher.enrich, messages)
        await self._write([e for _, e in good], bad)

    async def _write(self, events: list[EnrichedEvent], bad: list[tuple[bytes, bytes]]) -> None:
        bad = bad + await self.journeys.build(events)
        await self.bus.producer().send_batch(self.settings.bus.topic_dead_letter, bad)
        PROCESSED.labels(self.stage, "ok").inc(len(events))
        PROCESSED.labels(self.stage, "dead_letter").inc(len(bad))

    async def run(self) -> None:
        """Pipelined: batch N+1 is polled and enriched while batch N is written to ClickHouse
        (chDB works outside the GIL), and offsets are committed in order, only up to batches whose
        journeys are written."""
        consumer = self.bus.consumer(self.topic, self.group)
        assert isinstance(consumer, EmbeddedConsumer)
        self.consumer = consumer
        writing: asyncio.Task[None] | None = None
        try:
            while not self.stopping.is_set():
                messages = await self._gather(consumer)
                LAG.labels(self.stage).set(consumer.lag())
                if not messages:
                    if writing is not None:
                        await writing
                        writing = None
                    continue
                upto = consumer.position()
                good, bad = await asyncio.to_thread(self.enricher.enrich, messages)
                if writing is not None:
                    await writing  # in order: commit N before N+1
                writing = asyncio.create_task(self._write_and_commit([e for _, e in good], bad, upto, len(messages)))
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
            await consumer.close()

    async def _write_and_commit(self, events: list[EnrichedEvent], bad: list[tuple[bytes, bytes]], upto: int,
                                records: int) -> None:
        started = time.perf_counter()
        if not await self._until_done(lambda: self._write(events, bad)):
            return  # stopping, not committed: redelivered on restart
        assert isinstance(self.consumer, EmbeddedConsumer)
        await self.consumer.commit_upto(upto)
        BATCH_SIZE.labels(self.stage).observe(records)
        BATCH_SECONDS.labels(self.stage).observe(time.perf_counter() - started)


class DeadLetterSink(StageRunner):
    """Copies dead letters into ClickHouse (``trailmark.dead_letters``) so they are queryable."""

    stage = "dead_letters"

    def __init__(self, bus: EventBus, settings: Settings, storage: Storage) -> None:
        super().__init__(bus, settings, settings.bus.topic_dead_letter, settings.bus.group_dead_letters,
                         5000)
        self.storage = storage

    async def handle(self, messages: Sequence[Message]) -> None:
        rows: list[dict[str, Any]] = []
        for m in messages:
            try:
                rec = orjson.loads(m.value)
                rec["failed_at"] = rec["failed_at"][:23].replace("T", " ")
                rows.append(rec)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                rows.append({"stage": "unknown", "reason": "unreadable dead letter", "payload": "",
                             "payload_encoding": "utf-8", "failed_at": "1970-01-01 00:00:00.000",
                             "version": SCHEMA_VERSION})
        await asyncio.to_thread(self.storage.insert, "dead_letters", rows)
