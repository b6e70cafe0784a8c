"""Stage runners: poll the bus, run a stage, write its output, then commit (at-least-once).

A record a stage cannot process becomes a DeadLetter (raw payload, stage, reason, time, version) on
the dead-letter topic and the stream goes on. Only "dependency unavailable" errors are retried, by
not committing.

No input may stop a stage: building a dead letter cannot fail (a payload that cannot be JSON is
kept as its bounded repr, a reason is made valid UTF-8), and the dead-letter sink stores whatever
arrives on its topic, falling back row by row to a minimal row. What is left (a damaged log, a
dependency down for good) shows in each stage's health: restarts and progress, read by /readyz
and exported to /metrics.
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
from trailmark.settings import HealthSettings, Settings
from trailmark.storage.base import Storage, StorageUnavailable

log = logging.getLogger("trailmark.runtime")

PROCESSED = Counter("trailmark_stage_records_total", "Records handled by a stage", ["stage", "outcome"])
LAG = Gauge("trailmark_consumer_lag", "Records not yet consumed", ["stage"])
BATCH_SIZE = Histogram("trailmark_stage_batch_records", "Records per stage batch", ["stage"],
                       buckets=(1, 10, 100, 1000, 5000, 20000))
BATCH_SECONDS = Histogram("trailmark_stage_batch_seconds", "Seconds per stage batch", ["stage"])
HEALTHY = Gauge("trailmark_stage_healthy", "1 while a stage makes progress, 0 when it crash-loops or stalls",
                ["stage"])
RESTARTS = Counter("trailmark_stage_restarts_total", "Times a stage crashed and was restarted", ["stage"])
DEAD_LETTERS_REFUSED = Counter("trailmark_dead_letters_refused_total",
                               "Dead letters storage refused even as a minimal row (logged, then skipped)")

MAX_DEAD_LETTER_PAYLOAD = 1024 * 1024  # bytes kept of a failed record; Kafka's default record limit is 1 MiB
MAX_REASON = 2000


def _valid_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates (from JSON escapes) become visible ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _payload_bytes(payload: object) -> tuple[bytes, str]:
    """A failed record's bytes, and a note for the reason when they are not its JSON.

    The JSON when it can be written; otherwise (nested deeper than orjson's 255 levels, lone
    surrogates, integers over 64 bits) the Python repr, which shows the same content."""
    if isinstance(payload, bytes):
        return payload, ""
    try:
        return orjson.dumps(payload), ""
    except (TypeError, ValueError) as exc:
        note = f"payload kept as Python repr, not JSON ({exc})"
    try:
        text = repr(payload)
    except (RecursionError, ValueError, TypeError, MemoryError):
        return f"<a {type(payload).__name__} that cannot be shown>".encode(), "payload cannot be shown"
    return _valid_text(text[:MAX_DEAD_LETTER_PAYLOAD]).encode(), note


def dead_letter(stage: str, reason: str, payload: object) -> bytes:
    """A dead-letter record for a failed record; never raises, whatever ``reason`` and ``payload``.

    ``payload`` is the record as it arrived (bytes: kept as UTF-8 text, else base64) or the object
    that failed (kept as JSON, else as its repr). At most MAX_DEAD_LETTER_PAYLOAD bytes are kept;
    the reason says when the payload was cut or is not the original JSON."""
    data, note = _payload_bytes(payload)
    notes = [note] if note else []
    if len(data) > MAX_DEAD_LETTER_PAYLOAD:
        notes.append(f"payload cut from {len(data)} to {MAX_DEAD_LETTER_PAYLOAD} bytes")
        data = data[:MAX_DEAD_LETTER_PAYLOAD]
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(data).decode(), "base64"
    full = _valid_text(reason)[:MAX_REASON] + "".join(f" [{n}]" for n in notes)
    record: DeadLetter = {"stage": _valid_text(stage), "reason": full or "unknown", "payload": text,
                          "payload_encoding": encoding,  # type: ignore[typeddict-item]
                          "failed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                          "version": SCHEMA_VERSION}
    return orjson.dumps(record)


def describe(exc: BaseException) -> str:
    """``Type: message`` for a reason; a message that itself fails to format is not fatal."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails (from hostile input) still has a type
        return type(exc).__name__


class StageHealth:
    """Whether a stage is doing its work; read by /readyz, exported as ``trailmark_stage_healthy``.

    Unhealthy when the stage crash-loops (``crash_loop_restarts`` restarts without progress in
    between) or stalls: a batch in flight, polls failing or records waiting, and no progress for
    ``stall_after_s``. Progress is a committed batch, or a poll that found nothing to do.
    """

    def __init__(self, stage: str, settings: HealthSettings) -> None:
        self.stage = stage
        self.settings = settings
        self.restarts = 0
        self.crashes_in_a_row = 0
        self.last_error = ""
        self.last_progress = time.monotonic()
        self.busy_since: float | None = None  # a batch taken and not committed yet
        self.poll_failing = False
        self.lag = 0

    def export(self) -> None:
        """Export this stage's gauge and restart counter (only for stages this process runs)."""
        HEALTHY.labels(self.stage).set_function(lambda: 0.0 if self.problem() else 1.0)
        RESTARTS.labels(self.stage)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()
        self.crashes_in_a_row = 0
        self.busy_since = None
        self.poll_failing = False

    def busy(self) -> None:
        self.busy_since = time.monotonic()

    def crashed(self, exc: BaseException) -> None:
        self.restarts += 1
        self.crashes_in_a_row += 1
        self.last_error = describe(exc)[:300]
        self.busy_since = None
        RESTARTS.labels(self.stage).inc()

    def problem(self) -> str | None:
        """Why the stage is not healthy, or None."""
        if self.crashes_in_a_row >= self.settings.crash_loop_restarts:
            return (f"crash-looping: {self.crashes_in_a_row} restarts without progress;"
                    f" last error: {self.last_error}")
        stuck = time.monotonic() - self.last_progress
        if stuck <= self.settings.stall_after_s:
            return None
        if self.busy_since is not None:
            return f"no progress for {stuck:.0f} s: a batch is still being written (a dependency is unavailable?)"
        if self.poll_failing:
            return f"no progress for {stuck:.0f} s: cannot poll the bus"
        if self.lag > 0:
            return f"no progress for {stuck:.0f} s with {self.lag} records waiting"
        return None


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
        self.health = StageHealth(self.stage, settings.health)

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
                await self.pause(backoff)
                backoff = min(backoff * 2, 5.0)
                if self.stopping.is_set():
                    return False

    def _polled(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        lag = consumer.lag()
        LAG.labels(self.stage).set(lag)
        self.health.lag = lag
        self.health.poll_failing = False
        if not messages and self.health.busy_since is None:
            self.health.progressed()  # nothing to do is progress too

    async def pause(self, seconds: float) -> None:
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
                    self.health.poll_failing = True
                    await self.pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                self._polled(self.consumer, messages)
                if not messages:
                    continue
                started = time.perf_counter()
                self.health.busy()
                if not await self._until_done(functools.partial(self.handle, messages)):
                    return  # stopping, not committed: redelivered on restart
                backoff = 0.2
                try:
                    await self.consumer.commit()
                except BusUnavailable as exc:  # offsets stay pending: the next commit carries them
                    log.warning("%s: commit failed, will retry with the next batch: %s", self.stage, exc)
                self.health.progressed()  # the output is written; a pending commit goes with the next one
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
                bad.append((m.key, dead_letter(self.stage, f"unreadable raw batch: {describe(exc)}", m.value)))
                continue
            for raw in events:
                try:
                    good.append((m.key, enrich(raw, site)))
                except Exception as exc:  # one event's failure is that event's dead letter
                    bad.append((m.key, dead_letter(self.stage, describe(exc), raw)))
        return good, bad

    async def handle(self, messages: Sequence[Message]) -> None:
        good, bad = self.enrich(messages)
        records: list[tuple[bytes, bytes]] = []
        for key, event in good:
            try:
                records.append((key, orjson.dumps(event)))
            except (TypeError, ValueError) as exc:  # e.g. properties nested deeper than JSON can be written
                bad.append((key, dead_letter(self.stage, f"cannot be written as JSON: {describe(exc)}", event)))
        producer = self.bus.producer()
        await producer.send_batch(self.settings.bus.topic_enriched, records)
        await producer.send_batch(self.settings.bus.topic_dead_letter, bad)
        PROCESSED.labels(self.stage, "ok").inc(len(records))
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
                event = orjson.loads(m.value)
            except orjson.JSONDecodeError as exc:
                bad.append((m.key, dead_letter(self.stage, f"not JSON: {exc}", m.value)))
                continue
            if not isinstance(event, dict):  # another producer's record: the builder reads objects only
                bad.append((m.key, dead_letter(self.stage, f"not an event: a JSON {type(event).__name__}", m.value)))
                continue
            events.append(event)  # type: ignore[arg-type]  # a dict; its fields are checked by the builder
        failed = await self.build(events)
        await self.bus.producer().send_batch(self.settings.bus.topic_dead_letter, bad + failed)
        PROCESSED.labels(self.stage, "ok").inc(len(events) - len(failed))
        PROCESSED.labels(self.stage, "dead_letter").inc(len(bad) + len(failed))

    async def build(self, events: list[EnrichedEvent]) -> list[tuple[bytes, bytes]]:
        """Write the events' journeys; the dead letters of those that cannot be written.

        A failed batch is split in halves until each failing event is alone: a few builder calls
        per bad event rather than one per event of a 20k batch, so a trickle of hostile events
        cannot slow the stream to a crawl. The rest is written."""
        try:
            await asyncio.to_thread(self.builder.process, events)
            return []
        except StorageUnavailable:
            raise
        except Exception as exc:
            for ev in events:  # their visitors' state may be half-updated: reloaded from ClickHouse
                self._forget(ev)
            if len(events) == 1:
                return [(b"", dead_letter(self.stage, describe(exc), events[0]))]
            log.warning("journeys: batch of %d failed (%s), splitting it to find the bad events",
                        len(events), describe(exc)[:300])
        half = len(events) // 2
        return await self.build(events[:half]) + await self.build(events[half:])

    def _forget(self, event: EnrichedEvent) -> None:
        try:
            self.builder.forget(event)
        except Exception:  # unhashable ids (another producer's event): no state was kept for them
            pass


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
                self._polled(consumer, messages)
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
        self.health.busy()
        if not await self._until_done(lambda: self._write(events, bad)):
            return  # stopping, not committed: redelivered on restart
        assert isinstance(self.consumer, EmbeddedConsumer)
        await self.consumer.commit_upto(upto)
        self.health.progressed()
        BATCH_SIZE.labels(self.stage).observe(records)
        BATCH_SECONDS.labels(self.stage).observe(time.perf_counter() - started)


def _ch_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _payload_bytes(value)[0].decode("utf-8", "replace")


def dead_letter_row(value: bytes) -> dict[str, Any]:
    """The ``dead_letters`` row of one record of the dead-letter topic, whatever it holds.

    Fields of the wrong type are coerced (text as JSON, a version out of UInt32 as 0, a time that
    is not text as now); a record that is not a JSON object (another producer's, a damaged one)
    is kept whole as the payload of a row of stage ``unknown``. ClickHouse may still refuse a
    value (a time it cannot parse): DeadLetterSink then falls back to a minimal row."""
    try:
        rec = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        rec = orjson.loads(dead_letter("unknown", f"unreadable dead letter: not JSON: {exc}", value))
    if not isinstance(rec, dict):
        rec = orjson.loads(dead_letter("unknown", f"unreadable dead letter: a JSON {type(rec).__name__}", value))
    failed_at, version = rec.get("failed_at"), rec.get("version")
    return {
        "stage": _as_text(rec.get("stage")) or "unknown",
        "reason": _as_text(rec.get("reason")),
        "payload": _as_text(rec.get("payload")),
        "payload_encoding": _as_text(rec.get("payload_encoding")),
        "failed_at": failed_at[:23].replace("T", " ") if isinstance(failed_at, str) else _ch_now(),
        "version": version if isinstance(version, int) and 0 <= version < 2**32 else 0,
    }


def _ascii(text: str, limit: int) -> str:
    return text[:limit].encode("ascii", "backslashreplace").decode("ascii")


def minimal_row(row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """What is stored of a dead letter ClickHouse refused: plain ASCII, a valid time, and the
    refused row itself as the payload (JSON, base64), so nothing of it is lost."""
    original = _payload_bytes(row)[0]
    return {"stage": _ascii(str(row.get("stage", "unknown")), 100),
            "reason": f"stored as a minimal row, storage refused the dead letter ({_ascii(describe(exc), 500)});"
                      f" payload: the refused row as JSON; its reason: {_ascii(str(row.get('reason', '')), 1000)}",
            "payload": base64.b64encode(original[:MAX_DEAD_LETTER_PAYLOAD]).decode(),
            "payload_encoding": "base64", "failed_at": _ch_now(), "version": SCHEMA_VERSION}


class DeadLetterSink(StageRunner):
    """Copies dead letters into ClickHouse (``trailmark.dead_letters``) so they are queryable.

    It must never stop on a record: a batch ClickHouse refuses is inserted row by row, and a row it
    refuses becomes a minimal row; only an unavailable ClickHouse is retried."""

    stage = "dead_letters"

    def __init__(self, bus: EventBus, settings: Settings, storage: Storage) -> None:
        super().__init__(bus, settings, settings.bus.topic_dead_letter, settings.bus.group_dead_letters,
                         5000)
        self.storage = storage

    async def handle(self, messages: Sequence[Message]) -> None:
        rows = [dead_letter_row(m.value) for m in messages]
        await asyncio.to_thread(self.insert, rows)
        PROCESSED.labels(self.stage, "ok").inc(len(rows))

    def insert(self, rows: list[dict[str, Any]]) -> None:
        try:
            self.storage.insert("dead_letters", rows)
            return
        except StorageUnavailable:
            raise
        except Exception as exc:
            log.warning("dead letters: batch of %d refused (%s); inserting row by row", len(rows), describe(exc)[:300])
        for row in rows:
            try:
                self.storage.insert("dead_letters", [row])
            except StorageUnavailable:
                raise
            except Exception as exc:
                self._insert_minimal(row, exc)

    def _insert_minimal(self, row: dict[str, Any], exc: BaseException) -> None:
        try:
            self.storage.insert("dead_letters", [minimal_row(row, exc)])
        except StorageUnavailable:
            raise
        except Exception as again:  # nothing more can be stored of it: counted and logged, not blocking
            DEAD_LETTERS_REFUSED.inc()
            log.error("dead letters: storage refused even the minimal row (%s); skipped: %r",
                      describe(again)[:300], row.get("reason", "")[:300])
