"""EventBus on a real Kafka cluster via aiokafka: durable, keyed, at-least-once.

Broker trouble (unreachable, timeouts, leader moves) surfaces as ``BusUnavailable`` so stages
retry or spool instead of dead-lettering; anything else aiokafka raises becomes ``BusError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    CommitFailedError,
    DuplicateSequenceNumber,
    IllegalGenerationError,
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    KafkaUnavailableError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
    UnknownProducerId,
    for_code,
)
from aiokafka.partitioner import murmur2
from prometheus_client import Counter

from trailmark.bus.base import BusError, BusUnavailable, Message, RevokeCallback
from trailmark.bus.frames import FramesError, decode_frames, encode_frames
from trailmark.settings import BusSettings

log = logging.getLogger(__name__)

PRODUCED = Counter("trailmark_produced_records_total", "Records acknowledged by the broker", ["topic"])
PRODUCE_ERRORS = Counter(
    "trailmark_produce_errors_total", "Produce calls that failed (records not acknowledged)", ["topic", "kind"]
)

_COMPRESSION: dict[str, str | None] = {"lz4": "lz4", "zstd": "zstd", "gzip": "gzip", "none": None}
# Errors that leave an idempotent producer unusable (its sequence / epoch state is off, or its
# sender task died): the bus replaces the producer and the caller retries.
_PRODUCER_STATE = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    DuplicateSequenceNumber,
    ProducerClosed,
)
# The group rebalanced under us: the records will be redelivered to the new owner (at-least-once),
# so a failed commit is not an error the caller can act on.
_REBALANCED = (CommitFailedError, IllegalGenerationError, UnknownMemberIdError, RebalanceInProgressError)

# Records of one send_batch bound for the same partition travel as one Kafka record of frames (see
# trailmark/bus/frames.py), marked by this header: aiokafka's per-record costs (a send() and its
# future on the producer, a ConsumerRecord on the consumer) are most of a hop's CPU at our rates.
# Each frame keeps its own key, the partition is the one Kafka's default partitioner gives that key,
# and a pack is unpacked into the same Messages, so stages see no difference. A pack is capped so a
# consumer's batch and a broker's message limit stay bounded.
PACK_HEADER = ("trailmark-frames", b"1")
PACK_MAX_BYTES = 256 * 1024
PACK_MAX_RECORDS = 500


@lru_cache(maxsize=65536)
def _key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash (murmur2, as the Java client); pure Python, hence cached."""
    return int(murmur2(key)) & 0x7FFFFFFF


def _packs(
    records: Sequence[tuple[bytes, bytes]], partitions: int, max_bytes: int
) -> Iterator[tuple[int, bytes | None, bytes, bool]]:
    """(partition, key, value, packed) per Kafka record to send: a partition's records, in order,
    grouped into packs of at most ``max_bytes`` / PACK_MAX_RECORDS; a record alone stays as it is."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for record in records:
        by_partition.setdefault(_key_hash(record[0]) % partitions, []).append(record)
    for partition, group in by_partition.items():
        chunk: list[tuple[bytes, bytes]] = []
        size = 0
        for record in group:
            n = len(record[0]) + len(record[1]) + 8
            if chunk and (size + n > max_bytes or len(chunk) >= PACK_MAX_RECORDS):
                yield _pack(partition, chunk)
                chunk, size = [], 0
            chunk.append(record)
            size += n
        if chunk:
            yield _pack(partition, chunk)


def _pack(partition: int, chunk: list[tuple[bytes, bytes]]) -> tuple[int, bytes | None, bytes, bool]:
    if len(chunk) == 1:
        return partition, chunk[0][0], chunk[0][1], False
    return partition, None, encode_frames(chunk), True


def _backoff_failed_metadata() -> None:
    """Pause after a failed metadata update, as aiokafka's own retry loops assume.

    With the broker down, aiokafka's consumer fetcher and producer sender force a metadata update
    and retry as soon as it fails, and a failed update returns at once (connection refused): a busy
    loop of thousands of attempts (and two log lines each) per second per client for the whole
    outage. One ``retry_backoff_ms`` (100 ms) after each failure bounds that at ~10 per second.
    """
    original = AIOKafkaClient._metadata_update
    if getattr(original, "_trailmark_backoff", False):
        return

    async def _metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> Any:
        ok = await original(self, cluster_metadata, topics)
        if not ok:
            await asyncio.sleep(getattr(self, "_retry_backoff", 0.1))
        return ok

    _metadata_update._trailmark_backoff = True  # type: ignore[attr-defined]
    AIOKafkaClient._metadata_update = _metadata_update


_backoff_failed_metadata()


def _is_unavailable(exc: BaseException) -> bool:
    """Whether retrying later can help: connection, timeout and retriable broker errors."""
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | KafkaUnavailableError):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError | TimeoutError)


def _bus_error(exc: BaseException, what: str) -> BusError:
    if _is_unavailable(exc):
        return BusUnavailable(f"kafka {what}: {exc}")
    return BusError(f"kafka {what}: {exc}")


@asynccontextmanager
async def _mapped(what: str, timeout_s: float) -> AsyncIterator[None]:
    """Bound a broker call and translate aiokafka errors into the bus's two error kinds."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (KafkaError, OSError, TimeoutError) as exc:
        raise _bus_error(exc, what) from exc


class KafkaProducer:
    """Idempotent producer (acks=all): a retried batch is never duplicated or reordered."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus

    async def send_batch(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        if not records:
            return
        producer = await self._bus._ensure_producer()
        futures: list[asyncio.Future[Any]] = []
        try:
            # Twice the request timeout: metadata wait + batch expiry are each bounded by it.
            async with _mapped(f"send to {topic}", 2 * self._bus.request_timeout_s + 1):
                try:
                    partitions = len(await producer.partitions_for(topic))
                    cap = min(PACK_MAX_BYTES, self._bus.settings.max_batch_bytes // 2)
                    for partition, key, value, packed in _packs(records, partitions, cap):
                        headers = [PACK_HEADER] if packed else None
                        futures.append(
                            await producer.send(topic, value=value, key=key, partition=partition, headers=headers)
                        )
                finally:
                    # Await every queued record even if a later send failed, so no future is orphaned.
                    results = await asyncio.gather(*futures, return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
        except BusError as exc:
            # A failed or expired batch leaves a gap in the idempotent producer's sequence numbers,
            # which the broker answers with OutOfOrderSequenceNumber on every later batch (aiokafka
            # does not bump the epoch as the Java client does): start over with a new producer id.
            self._bus._discard_producer(producer)
            fatal = isinstance(exc.__cause__, _PRODUCER_STATE)
            PRODUCE_ERRORS.labels(topic, "unavailable" if isinstance(exc, BusUnavailable) or fatal else "error").inc()
            for fut in futures:
                if not fut.done():
                    fut.cancel()
            if fatal:
                raise BusUnavailable(f"kafka send to {topic}: producer reset after {exc.__cause__!r}") from exc
            raise
        except asyncio.CancelledError:  # e.g. the collector's spool deadline: not acknowledged
            self._bus._discard_producer(producer)
            PRODUCE_ERRORS.labels(topic, "timeout").inc()
            raise
        PRODUCED.labels(topic).inc(len(records))


_Held = tuple[TopicPartition, int, list[Message]]
"""A Kafka record fetched but not handed out yet: its partition, the commit position once it is
handed out, its messages."""


class _Tracker(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """Drops offsets of revoked partitions so a commit never moves a partition we no longer own, and
    runs the consumer's revoke callbacks. aiokafka awaits this before the group moves partitions,
    and the assignment (hence commits) stays valid meanwhile: an async callback can finish writing
    and commit what it polled, so the next owner starts after it instead of redoing it alongside."""

    def __init__(self, pending: dict[TopicPartition, int], revoked: list[RevokeCallback], held: deque[_Held]) -> None:
        self._pending = pending
        self._revoked = revoked
        self._held = held

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._pending.pop(tp, None)
        if self._held:  # fetched but not handed out: the partition's next owner reads them
            gone = set(revoked)
            kept = [h for h in self._held if h[0] not in gone]
            self._held.clear()
            self._held.extend(kept)
        if revoked:
            for callback in self._revoked:
                result = callback()
                if result is not None:
                    await result

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.debug("kafka partitions assigned: %s", sorted(str(tp) for tp in assigned))


class KafkaConsumer:
    """Group consumer with manual commits: offsets advance only when the caller says its output is done."""

    def __init__(self, bus: KafkaBus, topic: str, group: str) -> None:
        self._bus = bus
        self._topic = topic
        self._group = group
        self._pending: dict[TopicPartition, int] = {}  # next offset to commit, per owned partition
        # records fetched beyond a poll's max_records, handed out by the next polls
        self._held: deque[_Held] = deque()
        self._consumer: Any = None
        self._closed = False
        self._revoke_callbacks: list[RevokeCallback] = []

    def on_revoke(self, callback: RevokeCallback) -> None:
        self._revoke_callbacks.append(callback)

    async def _ensure_started(self) -> Any:
        """Connect on first poll (consumer() is sync); a failed start is retried on the next poll."""
        if self._closed:
            raise BusError("consumer is closed")
        if self._consumer is not None:
            return self._consumer
        bus = self._bus
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap,
            group_id=self._group,
            client_id=f"{bus.client_id}-{self._group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Joins can legitimately take longer than a produce; keep them above the session timeout.
            request_timeout_ms=max(bus.request_timeout_ms, 30_000),
            metadata_max_age_ms=30_000,
        )
        consumer.subscribe([self._topic], listener=_Tracker(self._pending, self._revoke_callbacks, self._held))
        try:
            async with _mapped(f"connect consumer {self._group}", bus.request_timeout_s + 1):
                await consumer.start()
        except BusError:
            await _quietly(consumer.stop())
            raise
        self._consumer = consumer
        return consumer

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """About ``max_records`` messages: whole Kafka records, the first one even if it is a pack
        larger than that (packs are capped at PACK_MAX_RECORDS). Records fetched beyond it wait for
        the next poll, so a commit position never falls inside a pack."""
        consumer = await self._ensure_started()
        held = self._held
        if not held:
            try:
                batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
            except KafkaError as exc:
                raise _bus_error(exc, f"poll {self._topic}") from exc
            owned = consumer.assignment()
            for tp, records in batches.items():
                if records and tp in owned:
                    held.extend((tp, r.offset + 1, _messages(tp, r)) for r in records)
        out: list[Message] = []
        pending = self._pending
        while held and len(out) < max_records:
            tp, position, messages = held.popleft()
            pending[tp] = position
            out += messages
        return out

    def position(self) -> dict[TopicPartition, int]:
        """The next offset of every partition polled so far (what ``commit`` would commit now)."""
        return dict(self._pending)

    async def commit(self) -> None:
        await self.commit_upto(self.position())

    async def commit_upto(self, position: object) -> None:
        """Commit a mark from ``position``, leaving out partitions revoked since it was taken (their
        new owner reprocesses from its last commit; the journey builder skips what is stored)."""
        assert isinstance(position, dict)
        if self._consumer is None or not position:
            return
        owned = self._consumer.assignment()
        offsets = {tp: off for tp, off in position.items() if tp in owned}
        if not offsets:
            return
        try:
            async with _mapped(f"commit {self._group}", self._bus.request_timeout_s + 1):
                await self._consumer.commit(offsets)
        except BusError as exc:
            if isinstance(exc.__cause__, _REBALANCED):
                log.warning("kafka commit skipped, group %s rebalanced: %s", self._group, exc.__cause__)
                return
            raise
        for tp, offset in offsets.items():
            if self._pending.get(tp) == offset:
                del self._pending[tp]

    async def close(self) -> None:
        """Leave the group (so the partitions move at once) without committing anything."""
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:  # bounded: leaving the group waits on the broker
            await _quietly(asyncio.wait_for(consumer.stop(), 5.0))
        self._bus._consumers.discard(self)

    def lag(self) -> int:
        consumer = self._consumer
        if consumer is None:
            return 0
        total = sum(len(h[2]) for h in self._held)  # fetched, not handed out yet
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            pos = _position(consumer, tp)
            if high is not None and pos is not None:
                total += max(0, int(high) - pos)
        return total


def _messages(tp: TopicPartition, r: Any) -> list[Message]:
    """The messages of one consumer record: a pack's frames, else the record itself."""
    key = r.key if r.key is not None else b""
    value = r.value if r.value is not None else b""
    if r.headers and PACK_HEADER in r.headers:
        try:
            frames = decode_frames(value)
        except FramesError as exc:  # not ours after all: the stage dead-letters it as it is
            log.warning("kafka record %s@%d has a broken pack (%s); passed on whole", tp, r.offset, exc)
        else:
            if frames:
                topic, partition, offset = r.topic, r.partition, r.offset
                return [Message(topic, partition, offset, k, v) for k, v in frames]
    return [Message(r.topic, r.partition, r.offset, key, value)]


def _position(consumer: Any, tp: TopicPartition) -> int | None:
    """Sync read of the fetch position (aiokafka's position() is async); None when unknown."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
        return int(state.position) if state is not None and state.has_valid_position else None
    except (AttributeError, KafkaError, KeyError):
        return None


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except Exception as exc:  # noqa: BLE001 - best-effort cleanup must not mask the real error
        log.debug("kafka cleanup failed: %s", exc)


class KafkaBus:
    """Kafka implementation of the EventBus protocol.

    ``start`` raises ``BusUnavailable`` when the broker is down, but the bus stays usable:
    ``send_batch`` / ``poll`` reconnect on their next call, so a collector can spool meanwhile.
    """

    def __init__(
        self,
        bootstrap: str,
        settings: BusSettings,
        *,
        request_timeout_s: float = 10.0,
        client_id: str = "trailmark",
    ) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.request_timeout_s = request_timeout_s
        self.client_id = client_id
        self._producer: Any = None
        self._producer_lock = asyncio.Lock()
        self._consumers: set[KafkaConsumer] = set()
        self._closing: set[asyncio.Task[None]] = set()  # discarded producers, stopping

    @property
    def request_timeout_ms(self) -> int:
        return int(self.request_timeout_s * 1000)

    async def start(self) -> None:
        await self._ensure_producer()

    def _discard_producer(self, producer: Any) -> None:
        """Stop using ``producer`` (if still current); it flushes and closes in the background."""
        if self._producer is not producer:
            return
        self._producer = None
        task = asyncio.get_running_loop().create_task(self._close_producer(producer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_producer(self, producer: Any) -> None:
        # Its queued batches are delivered or expire within the request timeout; then it stops.
        await _quietly(asyncio.wait_for(producer.stop(), 2 * self.request_timeout_s + 1))

    async def _ensure_producer(self) -> Any:
        async with self._producer_lock:
            if self._producer is not None:
                return self._producer
            s = self.settings
            try:
                producer = self._new_producer(s)
            except RuntimeError as exc:  # aiokafka's "Compression library for lz4 not found"
                raise BusError(f"kafka producer: {exc} (pip install 'aiokafka[lz4]', i.e. cramjam)") from exc
            try:
                async with _mapped("connect producer", self.request_timeout_s + 1):
                    await producer.start()
            except BusError:
                await _quietly(producer.stop())
                raise
            self._producer = producer
            return producer

    def _new_producer(self, s: BusSettings) -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            compression_type=_COMPRESSION[s.compression],
            linger_ms=s.linger_ms,
            max_batch_size=s.max_batch_bytes,
            max_request_size=max(s.max_batch_bytes, 1024 * 1024),
            request_timeout_ms=self.request_timeout_ms,
            metadata_max_age_ms=30_000,
        )

    async def stop(self, flush_timeout_s: float = 3.0) -> None:
        """Close consumers, then flush and close the producer, each bounded in time.

        Nothing depends on the flush for correctness: every ``send_batch`` returns only once its
        records are acknowledged, so records still queued belong to calls that have not returned
        (their batch is not committed / not answered 200) and will be sent again. The bound keeps a
        SIGTERM quick when the broker is gone.
        """
        for consumer in list(self._consumers):
            await consumer.close()
        async with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                async with asyncio.timeout(flush_timeout_s):
                    await producer.flush()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("kafka producer not flushed on stop: %s", exc or "timeout")
            try:
                async with asyncio.timeout(flush_timeout_s):
                    await producer.stop()
            except Exception as exc:  # noqa: BLE001 - best-effort close on shutdown
                log.debug("kafka producer stop: %s", exc or "timeout")
        for task in list(self._closing):
            task.cancel()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the missing topics; existing ones are left as they are (partition count included)."""
        if not topics:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-admin",
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            async with _mapped("ensure topics", 3 * self.request_timeout_s + 1):
                await admin.start()
                existing = set(await admin.list_topics())
                missing = [t for t in dict.fromkeys(topics) if t not in existing]
                if missing:
                    resp = await admin.create_topics(
                        [
                            NewTopic(
                                name=t,
                                num_partitions=self.settings.partitions,
                                replication_factor=self.settings.replication,
                            )
                            for t in missing
                        ]
                    )
                    _check_create(resp)
                    log.info("kafka topics created: %s", ", ".join(missing))
        finally:
            await _quietly(admin.close())

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self)

    def consumer(self, topic: str, group: str) -> KafkaConsumer:
        consumer = KafkaConsumer(self, topic, group)
        self._consumers.add(consumer)
        return consumer


def _check_create(resp: Any) -> None:
    """Raise the first per-topic error of a CreateTopics response, except 'already exists' (a race)."""
    for entry in resp.topic_errors:
        topic, code = entry[0], entry[1]
        if code == 0:
            continue
        err = for_code(code)
        if err is TopicAlreadyExistsError:
            continue
        message = entry[2] if len(entry) > 2 else ""
        raise err(f"{topic}: {message}")
