"""Stages and the one runner that drives them: poll, process, write, commit (at-least-once).

A stage is two functions over one batch of bus records:

- ``process(messages) -> Batch``: synchronous, run in a worker thread; the results per record or
  event (``Ok`` / ``Failed`` / ``Drop``, trailmark/results.py);
- ``write(ok) -> failed``: writes the ``Ok`` values (to the next topic, or to ClickHouse) and returns
  the ones that could not be written.

``StageRunner`` does everything else, the same for every stage and both buses: it polls, processes
batch N+1 while batch N is written, writes dead letters of every ``Failed`` (kind, reason, raw
payload, site), counts results by outcome and drops by reason, and commits offsets in order, only up
to the last batch whose output is written. Only ``Unavailable`` errors (trailmark/errors.py) are
retried, by not committing. The embedded mode chains enrichment and the journey builder in one
runner: the same two stages, with enrichment's output handed over in memory.

No input may stop a stage: every per-record failure becomes a dead letter, building one cannot
fail, and the dead-letter sink stores whatever arrives on its topic. What is left (a damaged log,
a dependency down for good) shows in each stage's health (trailmark/health.py), read by /readyz.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeGuard, TypeVar

import orjson
from prometheus_client import Counter, Gauge, Histogram

from enrich import Enricher, PoisonEvent
from enrich.companies import LookupRequests
from journey_builder.builder import JourneyBuilder
from journey_builder.core import STORED_ONLY
from journey_builder.privacy import ConsentPolicies
from schemas import JSON_TEXT_FIELDS, EnrichedEvent, RawBatch, Site, json_text, unfold
from trailmark.bus.base import BusUnavailable, Consumer, EventBus, Message
from trailmark.compiled import RecordTexts, read_runs, whole
from trailmark.errors import Unavailable
from trailmark.health import StageHealth
from trailmark.results import (
    MAX_DEAD_LETTER_PAYLOAD,
    Drop,
    Failed,
    Ok,
    dead_letter,
    dead_letter_row,
    describe,
    minimal_row,
)
from trailmark.settings import Settings
from trailmark.storage.base import Storage, StorageUnavailable
from trailmark.suppression import Suppression

log = logging.getLogger("trailmark.runtime")

PROCESSED = Counter("trailmark_stage_records_total", "Records handled by a stage", ["stage", "outcome"])
DROPPED = Counter("trailmark_stage_dropped_total", "Records a stage dropped on purpose", ["stage", "reason"])
LAG = Gauge("trailmark_consumer_lag", "Records not yet consumed", ["stage"])
BATCH_SIZE = Histogram(
    "trailmark_stage_batch_records", "Records per stage batch", ["stage"], buckets=(1, 10, 100, 1000, 5000, 20000)
)
BATCH_SECONDS = Histogram("trailmark_stage_batch_seconds", "Seconds per stage batch", ["stage"])
DEAD_LETTERS_REFUSED = Counter(
    "trailmark_dead_letters_refused_total", "Dead letters storage refused even as a minimal row (logged, then skipped)"
)

T = TypeVar("T")

__all__ = [  # the dead-letter helpers are re-exported for the tests and tools that build records
    "MAX_DEAD_LETTER_PAYLOAD",
    "Batch",
    "StageRunner",
    "dead_letter",
    "dead_letter_row",
    "describe",
    "minimal_row",
    "enrich_runner",
    "journey_runner",
    "embedded_runner",
    "dead_letter_sink",
]


@dataclass
class Batch(Generic[T]):
    """What a stage's ``process`` made of one batch of records."""

    ok: list[Ok[T]] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    dropped: list[Drop] = field(default_factory=list)
    # events in ``ok`` when a value holds several (the enricher's runs on Kafka); None: one each
    ok_events: int | None = None


# ---- stages -------------------------------------------------------------------------------------


def tune_gc(threshold: int) -> None:
    """Set the process's cyclic-GC pace (``Settings.gc_threshold``) and freeze what start-up
    allocated (modules, settings, packaged lookup data), so no collection walks it again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)


def trim_memory_every(interval_s: float) -> MemoryTrimmer | None:
    """Hand the C heap's free pages back to the system every ``interval_s`` seconds (glibc's
    ``malloc_trim``), in a thread of its own (started; ``stop`` ends it); None where there is no
    such call (another C library) or ``interval_s`` is 0.

    A batch's events are thousands of dicts of ~70 fields, each too large for Python's small-object
    allocator, so they come from malloc; freed, their pages stay in the process (counted in its
    RSS) until the heap's top is free or something trims it. Under the memory bench, ``trailmark
    up`` peaked at 972 MiB trimmed every 2 s against 989-1,006 untrimmed (4 minutes), and at 942
    MiB with this and 50,000 visitors kept against 1,059 (10 minutes; bench/RESULTS.md,
    2026-12-06). A trim takes a few milliseconds and runs without the GIL."""
    if interval_s <= 0:
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):  # no C library by that name, or not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trimmer = MemoryTrimmer(trim, interval_s)
    trimmer.start()
    return trimmer


class MemoryTrimmer(threading.Thread):
    """The thread of ``trim_memory_every``: a daemon, so it never holds the process open."""

    def __init__(self, trim: Callable[[int], int], interval_s: float) -> None:
        super().__init__(name="malloc-trim", daemon=True)
        self.trim, self.interval_s = trim, interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.trim(0)

    def stop(self) -> None:
        self.stopped.set()


class EnrichStage:
    """``RawBatch`` records -> ``EnrichedEvent`` results (one per event of each batch). With a
    storage, events of erased identifiers are dropped here (``Drop("erased")``)."""

    def __init__(
        self,
        settings: Settings,
        sites: dict[str, Site],
        storage: Storage | None = None,
        lookups: LookupRequests | None = None,  # company domains for the lookup worker (enrich/companies)
    ) -> None:
        self.enricher = Enricher(settings.enrich, Suppression(storage) if storage is not None else None, lookups)
        self.sites = sites
        self.max_skew = timedelta(seconds=settings.enrich.max_clock_skew_s)

    def process(self, messages: Sequence[Message]) -> Batch[EnrichedEvent]:
        out: Batch[EnrichedEvent] = Batch()
        enrich = self.enricher.enrich
        for m in messages:
            try:
                batch: RawBatch = orjson.loads(m.value)
                site = self.sites.get(batch["site_id"])
            except Exception as exc:  # not a RawBatch at all: the record is dead-lettered whole
                out.failed.append(Failed(m.key, "unreadable", f"unreadable raw batch: {describe(exc)}", m.value))
                continue

            def invalid(item: object, exc: Exception, key: bytes = m.key) -> None:
                out.failed.append(Failed(key, "invalid", f"not an event: {describe(exc)}", item))

            try:
                events = unfold(batch, self.max_skew, on_error=invalid)
            except Exception as exc:  # the batch's envelope is broken (no body, times not text, ...)
                out.failed.append(Failed(m.key, "unreadable", f"unreadable raw batch: {describe(exc)}", m.value))
                continue
            for raw in events:
                try:
                    out.ok.append(Ok(m.key, enrich(raw, site)))
                except PoisonEvent as exc:
                    out.failed.append(Failed(m.key, "invalid", exc.reason, raw))
                except Exception as exc:  # one event's failure is that event's dead letter
                    out.failed.append(Failed(m.key, "enrich_failed", describe(exc), raw))
        erased = self.enricher.erased([o.value for o in out.ok])
        if any(erased):
            out.dropped += [Drop("erased") for gone in erased if gone]
            out.ok = [o for o, gone in zip(out.ok, erased, strict=True) if not gone]
        return out

    def serialized(self, messages: Sequence[Message]) -> Batch[bytes]:
        """The same results as bus records (Kafka mode): a run of events with the same key (one
        visitor's events of one raw batch) becomes one record, ``{"fields": [names], "rows":
        [[values], ...]}`` (see ``parse_enriched``), its JSON-object fields as their JSON text
        (``schemas.JSON_TEXT_FIELDS``); an event no JSON can hold is dead-lettered alone."""
        enriched = self.process(messages)
        out: Batch[bytes] = Batch(failed=enriched.failed, dropped=enriched.dropped)
        dumps = orjson.dumps
        key = b""
        fields: tuple[str, ...] = ()
        run: list[bytes] = []
        size = written = 0
        texts: dict[tuple[str, ...], tuple[int, ...]] = {}  # per field order: where the JSON text fields are
        for ok in enriched.ok:
            names = tuple(ok.value)  # the enricher builds every event alike: one tuple for a whole run
            at = texts.get(names)
            if at is None:
                at = texts[names] = tuple(i for i, n in enumerate(names) if n in JSON_TEXT_FIELDS)
            try:
                values = list(ok.value.values())
                for i in at:  # objects as their JSON text (schemas.JSON_TEXT_FIELDS)
                    values[i] = json_text(values[i])
                value = dumps(values)
            except (TypeError, ValueError) as exc:  # e.g. properties nested deeper than JSON can be written
                out.failed.append(
                    Failed(ok.key, "unserializable", f"cannot be written as JSON: {describe(exc)}", ok.value)
                )
                continue
            if run and (
                ok.key != key
                or names != fields
                or len(run) >= ENRICHED_RUN_MAX_EVENTS
                or size >= ENRICHED_RUN_MAX_BYTES
            ):
                out.ok.append(Ok(key, _run_record(fields, run)))
                run, size = [], 0
            key, fields = ok.key, names
            run.append(value)
            size += len(value)
            written += 1
        if run:
            out.ok.append(Ok(key, _run_record(fields, run)))
        out.ok_events = written  # the runner counts events, as in the embedded mode
        return out


def _run_record(fields: tuple[str, ...], rows: list[bytes]) -> bytes:
    return b'{"fields":' + orjson.dumps(fields) + b',"rows":[' + b",".join(rows) + b"]}"


# One enriched record per run of a visitor's events rather than per event: a raw batch's 50 events
# then cost the enricher's produce and the builder's fetch one record (a frame, a Message, a parse
# call) instead of 50 (bench/RESULTS.md, "the enriched hop"). Capped so that a record stays well
# under the producer's request size and the pack cap (trailmark/bus/kafka.py). The run names its
# fields once and gives each event as a list of values: half the bytes of a list of objects, and
# half the enricher's encoding time (measured 4.2 against 8.2 us per event), for about 1 us more
# in the builder, which zips each row back into an event.
ENRICHED_RUN_MAX_EVENTS = 200
ENRICHED_RUN_MAX_BYTES = 128 * 1024


def parse_enriched(messages: Sequence[Message], skip: Sequence[str] = ()) -> Batch[EnrichedEvent]:
    """Enriched-topic records -> events for the journey builder. A record holds a run of one
    visitor's events (``{"fields": [...], "rows": [[...], ...]}``, what ``EnrichStage.serialized``
    writes), one event (a JSON object: what a dead-letter replay sends), or a JSON array of events
    (what trailmark wrote before the runs named their fields). JSON-object fields stay as they
    come, objects or their JSON text (``schemas.JSON_TEXT_FIELDS``): the builder takes both. Runs
    are read by the compiled reader where it is built (``trailmark.compiled``): the same dicts, the
    strings a batch repeats shared, each event's ``Ok.source`` its values as they came (``RecordTexts``),
    and without the fields of ``skip`` (kept only there: ``BuildStage.write`` makes them whole where
    the builder needs them so)."""
    out: Batch[EnrichedEvent] = Batch()
    ok, failed = out.ok, out.failed
    # the compiled reader's events (trailmark/compiled.py), how many are each record's (-1: read here),
    # and their values as they came (the builder writes the events rows from them: see BuildStage.write)
    events: list[dict[str, Any]] = []
    counts: list[int] = []
    raw: RecordTexts | None = None
    if read_runs is not None:
        events, counts, raw = read_runs([m.value for m in messages], orjson.loads, list(skip) or None)
    at = 0
    for i, m in enumerate(messages):
        if counts and (n := counts[i]) >= 0:
            key = m.key
            ok.extend([Ok(key, event, raw) for event in events[at : at + n]])  # type: ignore[arg-type]  # checked by the builder
            at += n
            continue
        run = _run_of(m.value)  # the common record, as EnrichStage.serialized writes it
        if run is None:
            try:
                value = orjson.loads(m.value)
            except orjson.JSONDecodeError as exc:
                failed.append(Failed(m.key, "unreadable", f"not JSON: {exc}", m.value))
                continue
            if type(value) is dict and "rows" in value and "message_id" not in value:
                fields, rows = value.get("fields"), value["rows"]
                if not _names(fields) or type(rows) is not list:
                    failed.append(Failed(m.key, "invalid", "not a run of events: fields or rows malformed", m.value))
                    continue
                run = (tuple(fields), rows, _errors_at(fields))
            elif type(value) is list:
                for event in value:
                    if type(event) is dict:
                        ok.append(Ok(m.key, event))  # type: ignore[arg-type]  # its fields are checked by the builder
                    else:  # another producer's array: an item that is not an object is dead-lettered alone
                        failed.append(Failed(m.key, "invalid", f"not an event: a JSON {type(event).__name__}", event))
                continue
            elif type(value) is dict:
                ok.append(Ok(m.key, value))  # type: ignore[arg-type]  # its fields are checked by the builder
                continue
            else:  # another producer's record: the builder reads objects only
                failed.append(Failed(m.key, "invalid", f"not an event: a JSON {type(value).__name__}", m.value))
                continue
        names, rows, errors = run
        width = len(names)
        for row in rows:
            if type(row) is list and len(row) == width:
                if errors >= 0 and row[errors] == []:
                    row[errors] = ()  # see _errors_at
                ok.append(Ok(m.key, dict(zip(names, row, strict=True))))  # type: ignore[arg-type]  # checked by the builder
            else:  # an item that is not a row of this run is dead-lettered alone
                failed.append(Failed(m.key, "invalid", f"not a row of {width} fields", row))
    return out


def whole_events(ok: Sequence[Ok[EnrichedEvent]]) -> list[EnrichedEvent]:
    """``ok``'s events with every field: those ``parse_enriched`` read without some (``skip``) made
    whole by their ``RecordTexts``, the others as they are."""
    events: list[Any] = [o.value for o in ok]
    slim: dict[int, tuple[RecordTexts, list[int]]] = {}
    for i, o in enumerate(ok):
        source: RecordTexts | None = o.source  # type: ignore[assignment]  # parse_enriched gives a RecordTexts or None
        if source is not None and source.slim:
            slim.setdefault(id(source), (source, []))[1].append(i)
    for source, at in slim.values():
        for i, event in zip(at, whole(source, [events[i] for i in at]), strict=True):
            events[i] = event
    return events


def raw_source(ok: Sequence[Ok[EnrichedEvent]]) -> RecordTexts | None:
    """The values of ``ok``'s events as they came off the bus, when one ``parse_enriched`` read them
    all (its compiled reader's ``RecordTexts``); else None."""
    raw = ok[0].source if ok else None
    if raw is None or any(o.source is not raw for o in ok):
        return None
    return raw  # type: ignore[return-value]  # parse_enriched gives a RecordTexts or None


def _errors_at(names: Sequence[str]) -> int:
    """Where ``enrich_errors`` is in a run's names; -1 when it is not there.

    ``parse_enriched`` reads an empty ``enrich_errors`` (nearly every event's) as an empty tuple, so
    an event's dict holds only strings, numbers and booleans (its JSON-object fields come as their
    text, schemas.JSON_TEXT_FIELDS). CPython's cyclic GC tracks a dict only once it holds a
    container, so its collections no longer walk a batch's ~20k dicts of ~75 values. In the Kafka
    journey builder (bench/builder.py --records --server) those collections found no garbage and
    took 9-10 % of its CPU: 1.0-1.2 s for 200k events, 0.57-0.62 s with the dicts untracked
    (gc.callbacks; bench/RESULTS.md, 2026-12-06)."""
    return names.index("enrich_errors") if "enrich_errors" in names else -1


# A run record's field names, read once per distinct list. A record of time-ordered traffic holds one
# or two events, so reading its ~80 names and checking them for every record cost about a third of
# the reading (11.5 against 7.8 us per event, timed alone). The names are interned, so each event's
# keys are the very objects the code looks them up with (their hashes are kept, and a lookup matches
# by identity). Bounded: a list longer than any the enricher writes is read each time, and the cache
# starts over when full.
_RUN_HEAD = b'{"fields":'
_RUN_ROWS = b',"rows":'
_RUN_NAMES: dict[bytes, tuple[tuple[str, ...], int]] = {}  # the names, and _errors_at of them
_RUN_NAMES_MAX = 64
_RUN_HEAD_MAX_BYTES = 8192


def _run_of(value: bytes) -> tuple[tuple[str, ...], list[Any], int] | None:
    """The names, rows and ``_errors_at`` of a record written as ``_run_record`` writes it (``{"fields":`` a list,
    ``,"rows":`` a list, ``}``, nothing else), else None: the record is read whole. A JSON string
    escapes its quotes, so the first ``,"rows":`` of the text is where the names end; any other
    record (a key after the rows, a second one, names that are no list) leaves one of the two
    parts no JSON, and is read whole: what this reads is what orjson reads of the whole record."""
    if not (value.startswith(_RUN_HEAD) and value.endswith(b"}")):
        return None
    end = value.find(_RUN_ROWS)
    if end < 0:
        return None
    head = value[len(_RUN_HEAD) : end]
    try:
        known = _RUN_NAMES.get(head)
        if known is None:
            names = orjson.loads(head)
            if not _names(names):
                return None
            fields = tuple(map(sys.intern, names))
            known = (fields, _errors_at(fields))
            if len(head) <= _RUN_HEAD_MAX_BYTES:
                if len(_RUN_NAMES) >= _RUN_NAMES_MAX:
                    _RUN_NAMES.clear()
                _RUN_NAMES[head] = known
        rows = orjson.loads(memoryview(value)[end + len(_RUN_ROWS) : -1])
    except orjson.JSONDecodeError:
        return None
    return (known[0], rows, known[1]) if type(rows) is list else None


def _names(fields: object) -> TypeGuard[list[str]]:
    """Field names of a run: distinct strings."""
    return type(fields) is list and all(type(f) is str for f in fields) and len(set(fields)) == len(fields)


class BuildStage:
    """Writes events' journeys to ClickHouse; the ones that cannot be written come back as failures.

    A failed batch is split in halves until each failing event is alone: a few builder calls per bad
    event rather than one per event of a 20k batch, so a trickle of hostile events cannot slow the
    stream to a crawl. After a rebalance (Kafka) the builder's visitor state is dropped before the
    next batch: another builder may have written those visitors meanwhile; it reloads from ClickHouse.
    """

    def __init__(self, settings: Settings, storage: Storage, sites: dict[str, Site]) -> None:
        consent = ConsentPolicies.from_sites(sites.values(), settings.privacy)
        self.builder = JourneyBuilder(storage, settings.journeys, consent)
        self.revoked = False

    def on_revoke(self) -> None:
        self.revoked = True  # acted on between batches, never under a running build

    async def write(self, ok: list[Ok[EnrichedEvent]]) -> list[Failed]:
        if self.revoked:
            self.revoked = False
            self.builder.reset()
        raw = raw_source(ok)
        return await self._build([o.value for o in ok] if raw is not None else whole_events(ok), raw)

    async def _build(self, events: list[EnrichedEvent], raw: RecordTexts | None = None) -> list[Failed]:
        if not events:
            return []
        try:
            out = await asyncio.to_thread(self.builder.process, events, raw)
        except Unavailable:
            raise
        except Exception as exc:
            if raw is not None:  # split and dead-lettered whole, as they came
                events = whole(raw, events)
            for ev in events:  # their visitors' state may be half-updated: reloaded from ClickHouse
                self._forget(ev)
            if len(events) == 1:
                return [Failed(b"", "build_failed", describe(exc), events[0])]
            log.warning(
                "journeys: batch of %d failed (%s), splitting it to find the bad events",
                len(events),
                describe(exc)[:300],
            )
        else:
            # events the builder skips on purpose: already stored (a redelivery, a replay), of an
            # erased contact, or without analytics consent on a site that keeps them only as counts
            # or not at all; each is counted, none is written as an event
            skipped = (
                ("duplicate", out.skipped_duplicates),
                ("erased", out.skipped_erased),
                ("no_consent_aggregated", out.aggregated),
                ("no_consent_dropped", out.skipped_no_consent),
            )
            for reason, n in skipped:
                if n:
                    DROPPED.labels("journeys", reason).inc(n)
            return []
        half = len(events) // 2
        return await self._build(events[:half]) + await self._build(events[half:])

    def _forget(self, event: EnrichedEvent) -> None:
        try:
            self.builder.forget(event)
        except Exception:  # unhashable ids (another producer's event): no state was kept for them
            pass


class DeadLetterStore:
    """Dead-letter records -> ``trailmark.dead_letters`` rows; never stops on a record: a batch
    ClickHouse refuses is inserted row by row, a row it refuses becomes a minimal row, and only an
    unavailable ClickHouse is retried."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def process(messages: Sequence[Message]) -> Batch[dict[str, Any]]:
        return Batch(ok=[Ok(m.key, dead_letter_row(m.value)) for m in messages])

    async def write(self, ok: list[Ok[dict[str, Any]]]) -> list[Failed]:
        await asyncio.to_thread(self.insert, [o.value for o in ok])
        return []

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
            log.error(
                "dead letters: storage refused even the minimal row (%s); skipped: %r",
                describe(again)[:300],
                row.get("reason", "")[:300],
            )


# ---- the runner ---------------------------------------------------------------------------------


class StageRunner(Generic[T]):
    """Drives one stage over one consumer group; see the module docstring."""

    def __init__(
        self,
        stage: str,
        bus: EventBus,
        settings: Settings,
        topic: str,
        group: str,
        batch: int,
        process: Callable[[Sequence[Message]], Batch[T]],
        write: Callable[[list[Ok[T]]], Awaitable[list[Failed]]],
        linger_s: float = 0.0,
        on_revoke: Callable[[], None] | None = None,
        failed_in: tuple[str, str] | None = None,
    ) -> None:
        self.stage = stage
        # the stage named in dead letters of ``process`` and of ``write`` (the fused embedded runner
        # names enrichment and the journey builder, as the separate Kafka stages do)
        self.failed_in = failed_in or (stage, stage)
        self.bus = bus
        self.settings = settings
        self.topic = topic
        self.group = group
        self.batch = batch
        self.process = process
        self.write = write
        self.linger_s = linger_s
        self.on_revoke = on_revoke
        self.stopping = asyncio.Event()
        self.consumer: Consumer | None = None
        self.health = StageHealth(stage, settings.health)
        self.writing: asyncio.Task[bool] | None = None  # the batch being written and committed
        self.rebalances = 0  # revocations seen: a batch polled before one is not written

    async def _gather(self, consumer: Consumer) -> tuple[list[Message], int]:
        """One batch: the first records (waiting up to flush_interval_s), then whatever else arrives
        within ``linger_s``, up to ``batch`` records. A stage with a fixed cost per batch (the journey
        builder's lookups and inserts) then writes fewer, larger batches under load.

        Also returns ``rebalances`` as of the batch's records: a poll returns records only between
        rebalances (Kafka holds them back while partitions move), so records polled before a
        revocation are dropped here (their partitions restart from the last commit, whoever owns
        them now) and the ones polled after it are kept."""
        messages = await consumer.poll(self.batch, self.settings.storage.flush_interval_s)
        generation = self.rebalances
        if not messages or self.linger_s <= 0:
            return messages, generation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while len(messages) < self.batch and (remaining := deadline - loop.time()) > 0:
            more = await consumer.poll(self.batch - len(messages), remaining)
            if self.rebalances != generation:
                messages, generation = [], self.rebalances
            if not more:
                break
            messages += more
        return messages, generation

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once on shutdown."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _polled(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        lag = consumer.lag()
        LAG.labels(self.stage).set(lag)
        self.health.lag = lag
        self.health.poll_failing = False
        if not messages and self.health.busy_since is None:
            self.health.progressed()  # nothing to do is progress too

    async def _revoked(self) -> None:
        """Partitions move away (Kafka rebalance; the move waits for this). The batch being written
        is finished and committed first, so the partitions' next owner starts after it; a batch
        polled but not yet written is dropped (``run`` checks ``rebalances``): its records go to
        whoever owns their partition now, from that commit. Without this, both consumers would write
        the same records at once (a builder's visitor state read while the other still writes it).
        A write waiting for an unavailable ClickHouse holds the rebalance until it is back, or until
        the group's rebalance timeout (max.poll.interval, 5 min) drops this member."""
        self.rebalances += 1  # at once (Kafka has just begun the rebalance): no batch polled until now gets written
        if self.on_revoke is not None:
            self.on_revoke()
        writing = self.writing
        if writing is not None and not writing.done():
            await asyncio.wait([writing])  # its outcome (even an error) is the run loop's to act on

    async def run(self) -> None:
        """Batch N+1 is polled and processed (in a worker thread) while batch N is written, and
        offsets are committed in order, only up to batches whose output is written."""
        consumer = self.consumer = self.bus.consumer(self.topic, self.group)
        consumer.on_revoke(self._revoked)
        self.writing = None
        backoff = 0.2
        try:
            while not self.stopping.is_set():
                try:
                    messages, generation = await self._gather(consumer)
                except BusUnavailable as exc:
                    log.warning("%s: cannot poll, retrying: %s", self.stage, exc)
                    self.health.poll_failing = True
                    await self.pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                self._polled(consumer, messages)
                if not messages:
                    if self.writing is not None and not await self.writing:
                        return
                    self.writing = None
                    continue
                upto = consumer.position()
                started = time.perf_counter()
                result = await asyncio.to_thread(self.process, messages)
                if self.writing is not None and not await self.writing:  # in order: N is committed before N+1
                    return
                self.writing = None
                if self.rebalances != generation:  # polled before partitions moved: their new owner has it
                    log.info(
                        "%s: rebalanced, %d polled records left to the partitions' owners", self.stage, len(messages)
                    )
                    continue
                self.health.busy()
                self.writing = asyncio.create_task(self._finish(result, upto, len(messages), started))
            if self.writing is not None:
                await self.writing
        finally:
            if self.writing is not None and not self.writing.done():
                self.writing.cancel()
            await consumer.close()

    async def _finish(self, result: Batch[T], upto: object, records: int, started: float) -> bool:
        """Write one batch's output and dead letters, then commit; False when stopped first (then
        nothing is committed and the batch is redelivered on restart)."""
        failed: list[Failed] = []

        async def write() -> None:
            nonlocal failed
            failed = await self.write(result.ok)
            processing, writing = self.failed_in
            dead = [(f.key, f.record(processing)) for f in result.failed]
            dead += [(f.key, f.record(writing)) for f in failed]
            await self.bus.producer().send_batch(self.settings.bus.topic_dead_letter, dead)

        if not await self._until_done(write):
            return False
        assert self.consumer is not None
        try:
            await self.consumer.commit_upto(upto)
        except BusUnavailable as exc:  # offsets stay pending: the next commit carries them
            log.warning("%s: commit failed, will retry with the next batch: %s", self.stage, exc)
        self.health.progressed()
        ok = len(result.ok) if result.ok_events is None else result.ok_events
        PROCESSED.labels(self.stage, "ok").inc(ok - len(failed))
        PROCESSED.labels(self.stage, "dead_letter").inc(len(result.failed) + len(failed))
        for drop in result.dropped:
            DROPPED.labels(self.stage, drop.reason).inc()
        BATCH_SIZE.labels(self.stage).observe(records)
        BATCH_SECONDS.labels(self.stage).observe(time.perf_counter() - started)
        return True

    async def _until_done(self, step: Callable[[], Awaitable[None]]) -> bool:
        """Run ``step``, retrying while a dependency is unavailable; False if stopped meanwhile."""
        backoff = 0.2
        while True:
            try:
                await step()
                return True
            except Unavailable as exc:
                log.warning("%s: dependency unavailable, retrying: %s", self.stage, exc)
                await self.pause(backoff)
                backoff = min(backoff * 2, 5.0)
                if self.stopping.is_set():
                    return False


# ---- the runners the app starts ----------------------------------------------------------------


def enrich_runner(
    bus: EventBus,
    settings: Settings,
    sites: dict[str, Site],
    storage: Storage | None = None,
    lookups: LookupRequests | None = None,
) -> StageRunner[bytes]:
    """Kafka: raw topic -> enriched topic (erased identifiers dropped when the process has a storage)."""
    stage = EnrichStage(settings, sites, storage, lookups)
    topic = settings.bus.topic_enriched

    async def forward(ok: list[Ok[bytes]]) -> list[Failed]:
        await bus.producer().send_batch(topic, [(o.key, o.value) for o in ok])
        return []

    b = settings.bus
    return StageRunner("enrich", bus, settings, b.topic_raw, b.group_enrich, 5000, stage.serialized, forward)


def journey_runner(
    bus: EventBus, settings: Settings, sites: dict[str, Site], storage: Storage
) -> StageRunner[EnrichedEvent]:
    """Kafka: enriched topic -> ClickHouse; after a rebalance the builder reloads visitor state.
    Enriched records are runs of a visitor's events (``EnrichStage.serialized``): a round polls
    about batch_rows events' worth, as the embedded runner does with request batches."""
    stage = BuildStage(settings, storage, sites)
    b = settings.bus
    return StageRunner(
        "journeys",
        bus,
        settings,
        b.topic_enriched,
        b.group_journeys,
        max(1, settings.storage.batch_rows // 25),
        # on a server the events rows are written from the records' text (RecordTexts): the dicts need
        # only what the journey logic reads
        functools.partial(parse_enriched, skip=STORED_ONLY) if storage.json_columns else parse_enriched,
        stage.write,
        linger_s=b.journeys_linger_ms / 1000,
        on_revoke=stage.on_revoke,
    )


def embedded_runner(
    bus: EventBus, settings: Settings, sites: dict[str, Site], storage: Storage, lookups: LookupRequests | None = None
) -> StageRunner[EnrichedEvent]:
    """Embedded: raw log -> enrichment -> journey builder, in memory. No enriched topic in between:
    its records would only be written to and read back from the same SQLite file by the same
    process. Raw records are request batches (a browser sends up to ~50 events in one): a round
    polls about batch_rows events' worth."""
    enrich, build = EnrichStage(settings, sites, storage, lookups), BuildStage(settings, storage, sites)
    b = settings.bus
    return StageRunner(
        "enrich+journeys",
        bus,
        settings,
        b.topic_raw,
        b.group_enrich,
        max(1, settings.storage.batch_rows // 25),
        enrich.process,
        build.write,
        linger_s=b.journeys_linger_ms / 1000,
        failed_in=("enrich", "journeys"),
    )


def dead_letter_sink(bus: EventBus, settings: Settings, storage: Storage) -> StageRunner[dict[str, Any]]:
    """Dead-letter topic -> ``trailmark.dead_letters`` (queryable)."""
    store = DeadLetterStore(storage)
    b = settings.bus
    return StageRunner(
        "dead_letters", bus, settings, b.topic_dead_letter, b.group_dead_letters, 5000, store.process, store.write
    )
