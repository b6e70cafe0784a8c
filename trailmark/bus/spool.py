"""The collector's local spool: while Kafka is unreachable, accepted batches are kept on disk.

``SpoolingProducer`` wraps the Kafka producer. A batch goes to Kafka; if the broker does not
acknowledge it within ``spool_after_s`` (or refuses it as unavailable), the batch is written to a
local SQLite WAL file with ``synchronous=FULL`` (an fsync per commit), and only then does the
collector answer 200. From that moment on, every new batch goes to the spool too, until a replay
task has moved the whole spool to Kafka in order: so one visitor's events are never reordered (a
later batch cannot overtake a spooled one). A batch that timed out may still reach Kafka from the
client's own retry and again from the replay; the journey builder skips repeated messageIds.

The spool survives a killed or restarted collector (it is replayed on the next start). Above
``spool_max_bytes`` it refuses writes (BusUnavailable: the collector answers 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import Counter, Gauge

from trailmark.bus.base import BusUnavailable, Producer
from trailmark.bus.embedded import EmbeddedBus, EmbeddedConsumer

log = logging.getLogger("trailmark.spool")

SPOOLED = Counter("trailmark_spool_records_total", "Records written to the collector's local spool")
REPLAYED = Counter("trailmark_spool_replayed_records_total", "Spooled records replayed to the broker")
PENDING = Gauge("trailmark_spool_pending_records", "Spooled records not yet replayed")
SPOOLING = Gauge("trailmark_spool_active", "1 while the collector writes to its spool instead of the broker")

_GROUP = "replay"
_REPLAY_BATCH = 500


class SpoolingProducer:
    """A Producer: Kafka while it acknowledges, else a durable local spool replayed in order."""

    def __init__(
        self,
        direct: Producer,
        path: Path,
        topics: Sequence[str],
        *,
        spool_after_s: float = 3.0,
        max_bytes: int = 2 * 1024**3,
    ) -> None:
        self._direct = direct
        self._path = path
        self._topics = frozenset(topics)
        self._after = spool_after_s
        self._max_bytes = max_bytes
        self._spool = EmbeddedBus(path, durable_fsync=True)
        self._spooling = False
        self._inflight = 0  # spool writes started and not finished
        self._replayer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def spooling(self) -> bool:
        return self._spooling

    async def start(self) -> None:
        """Open the spool; records left by a previous run are replayed first."""
        await self._spool.start()
        await self._spool.ensure_topics(sorted(self._topics))
        consumers = self._consumers()
        left = sum(c.lag() for c in consumers)
        for c in consumers:
            await c.close()
        PENDING.set(left)
        if left:
            log.warning("spool: %d record(s) left from a previous run, replaying before new ones", left)
            self._enter()

    def _consumers(self) -> list[EmbeddedConsumer]:
        return [self._spool.consumer(t, _GROUP) for t in sorted(self._topics)]

    async def send_batch(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        if not records:
            return
        if topic not in self._topics:
            await self._direct.send_batch(topic, records)
            return
        if not self._spooling:
            try:
                async with asyncio.timeout(self._after):
                    await self._direct.send_batch(topic, records)
                return
            except (BusUnavailable, TimeoutError) as exc:
                if not self._spooling:
                    log.warning("spool: broker not acknowledging (%s); spooling to %s", exc or "timeout", self._path)
                    self._enter()
        await self._write(topic, records)

    async def _write(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        if self._closed:
            raise BusUnavailable("collector is shutting down")
        self._inflight += 1
        try:
            if self._size() > self._max_bytes:
                raise BusUnavailable(f"spool full ({self._max_bytes} bytes) and the broker is unreachable")
            await self._spool.producer().send_batch(topic, records)
        finally:
            self._inflight -= 1
        SPOOLED.inc(len(records))
        PENDING.inc(len(records))

    def _size(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += Path(str(self._path) + suffix).stat().st_size
        return total

    def _enter(self) -> None:
        self._spooling = True
        SPOOLING.set(1)
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(self._replay(), name="spool-replay")

    async def _replay(self) -> None:
        """Move the spool to Kafka, oldest first; leave spool mode once it is empty and idle."""
        consumers = self._consumers()
        backoff = 0.2
        try:
            while True:
                moved = False
                for consumer in consumers:
                    messages = await consumer.poll(_REPLAY_BATCH, 0.0)
                    if not messages:
                        continue
                    batch = [(m.key, m.value) for m in messages]
                    while True:  # the same records until the broker takes them: order is kept
                        try:
                            await self._direct.send_batch(messages[0].topic, batch)
                            break
                        except BusUnavailable as exc:
                            log.debug("spool: replay waiting for the broker: %s", exc)
                            await asyncio.sleep(backoff)
                            backoff = min(backoff * 2, 2.0)
                    backoff = 0.2
                    await consumer.commit()
                    await asyncio.to_thread(self._spool.truncate_consumed, messages[0].topic, [_GROUP])
                    REPLAYED.inc(len(batch))
                    PENDING.dec(len(batch))
                    moved = True
                if moved:
                    continue
                # No await between these checks and the switch: no spool write can slip in between.
                if self._inflight == 0 and all(c.lag() == 0 for c in consumers):
                    self._spooling = False
                    SPOOLING.set(0)
                    PENDING.set(0)
                    log.warning("spool: replayed; writing to the broker again")
                    return
                await asyncio.sleep(0.02)
        finally:
            for consumer in consumers:
                await consumer.close()

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give a running replay a moment to finish; what is left stays on disk for the next start."""
        self._closed = True
        task = self._replayer
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), drain_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                log.warning("spool: stopped with records left in %s (replayed on the next start)", self._path)
        with contextlib.suppress(Exception):
            await self._spool.stop()

    def rewrite(self, change: Callable[[bytes], bytes | None]) -> int:
        """Rewrite the spooled records (see EmbeddedBus.rewrite): erased contacts leave the spool too.
        Records already replayed to the broker are out of reach (Kafka topics are never rewritten)."""
        return sum(self._spool.rewrite(topic, change) for topic in sorted(self._topics))
