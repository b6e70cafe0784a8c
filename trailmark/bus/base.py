"""The event-bus interface that every stage talks to; embedded log and Kafka both implement it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from trailmark.errors import TrailmarkError, Unavailable


class Message(NamedTuple):
    """One record as a consumer hands it out (a NamedTuple: built per record, it must be cheap)."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


RevokeCallback = Callable[[], Awaitable[None] | None]
"""What ``Consumer.on_revoke`` calls on a rebalance: a plain function, or one whose result is awaited."""


class BusError(TrailmarkError):
    """Base of bus errors. ``BusUnavailable`` means retry later, never dead-letter."""


class BusUnavailable(BusError, Unavailable):
    """The broker or log cannot take or give records right now (dependency unavailable)."""


class Producer(Protocol):
    async def send_batch(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Append (key, value) records; returns only once they are durable (acked / fsynced).

        Records with the same key keep their relative order. Raises BusUnavailable.
        """


class Consumer(Protocol):
    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Next records for this group, waiting up to ``timeout_s`` when there are none."""

    def position(self) -> object:
        """A mark of every record polled so far, for ``commit_upto`` once their output is written
        (later polls may be in flight meanwhile: that is how a runner overlaps batches)."""

    async def commit_upto(self, position: object) -> None:
        """Commit the records up to a mark from ``position`` (on partitions still owned)."""

    async def commit(self) -> None:
        """Mark every record returned by poll so far as done (call after the output is written)."""

    def on_revoke(self, callback: RevokeCallback) -> None:
        """Call ``callback`` when partitions move away from this consumer (a rebalance): state kept
        about their records may now be changed by another consumer of the group. An async callback
        is awaited before the partitions move: the time to finish writing and commit what was polled,
        so their next owner starts after it rather than redoing it alongside."""

    async def close(self) -> None: ...

    def lag(self) -> int:
        """Records not yet consumed by this group (best effort, for /metrics)."""


class EventBus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[str]) -> None: ...

    def producer(self) -> Producer: ...

    def consumer(self, topic: str, group: str) -> Consumer: ...
