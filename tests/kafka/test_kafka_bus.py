"""KafkaBus against a real broker: ordering, commits, at-least-once redelivery, topics, outages."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from trailmark.bus.base import BusUnavailable, Message
from trailmark.bus.kafka import KafkaBus, KafkaConsumer
from trailmark.settings import BusSettings

# One event loop for the whole module: aiokafka clients are bound to the loop that made them.
pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]


def fresh(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def running_bus(bootstrap: str, **settings: object) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(bootstrap, BusSettings(kind="kafka", **settings))  # type: ignore[arg-type]
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


async def drain(consumer: KafkaConsumer, n: int, timeout_s: float = 30.0) -> list[Message]:
    """Poll until ``n`` records arrived (fails on timeout), then check nothing extra follows."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)}/{n} records within {timeout_s}s"
        got.extend(await consumer.poll(max_records=500, timeout_s=0.5))
    got.extend(await consumer.poll(max_records=500, timeout_s=0.5))
    assert len(got) == n, f"expected exactly {n} records, got {len(got)}"
    return got


async def test_roundtrip_keeps_per_key_order_across_partitions(kafka_bootstrap: str) -> None:
    topic = fresh("order")
    async with running_bus(kafka_bootstrap, partitions=4, compression="lz4") as bus:
        await bus.ensure_topics([topic])
        producer = bus.producer()
        keys = [f"anon-{i}".encode() for i in range(12)]
        for batch in range(5):
            await producer.send_batch(
                topic, [(k, f"{k.decode()}:{batch}:{j}".encode()) for k in keys for j in range(4)]
            )
        consumer = bus.consumer(topic, fresh("group"))
        got = await drain(consumer, len(keys) * 5 * 4)

    per_key: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for m in got:
        _, batch, j = m.value.decode().split(":")
        assert m.topic == topic
        per_key[m.key].append((int(batch), int(j)))
        partitions_of[m.key].add(m.partition)
    assert set(per_key) == set(keys)
    for key, seq in per_key.items():
        assert seq == sorted(seq), f"{key!r} out of order"
        assert len(partitions_of[key]) == 1, "one key must stay on one partition"
    assert len({p for ps in partitions_of.values() for p in ps}) > 1, "keys should spread over partitions"


async def test_commit_then_new_consumer_resumes_after_committed_offset(kafka_bootstrap: str) -> None:
    topic, group = fresh("resume"), fresh("group")
    async with running_bus(kafka_bootstrap, partitions=3) as bus:
        await bus.ensure_topics([topic])
        producer = bus.producer()
        await producer.send_batch(topic, [(f"k{i % 3}".encode(), f"first-{i}".encode()) for i in range(9)])

        first = bus.consumer(topic, group)
        seen = await drain(first, 9)
        assert {m.value for m in seen} == {f"first-{i}".encode() for i in range(9)}
        await first.commit()
        assert first.lag() == 0
        await first.close()

        await producer.send_batch(topic, [(f"k{i % 3}".encode(), f"second-{i}".encode()) for i in range(6)])
        second = bus.consumer(topic, group)
        resumed = await drain(second, 6)
        assert {m.value for m in resumed} == {f"second-{i}".encode() for i in range(6)}
        await second.close()


async def test_uncommitted_records_are_redelivered(kafka_bootstrap: str) -> None:
    topic, group = fresh("redeliver"), fresh("group")
    async with running_bus(kafka_bootstrap, partitions=1) as bus:
        await bus.ensure_topics([topic])
        for i in range(5):  # one Kafka record each (a batch would be one pack: tests/kafka/test_packs.py)
            await bus.producer().send_batch(topic, [(b"k", f"v{i}".encode())])

        first = bus.consumer(topic, group)
        head: list[Message] = []
        deadline = time.monotonic() + 30
        while not head:
            assert time.monotonic() < deadline, "no record within 30s"
            head = await first.poll(max_records=2, timeout_s=0.5)
        assert [m.value for m in head] == [b"v0", b"v1"]
        assert first.lag() == 3  # fetched up to the highwater, handed out 2
        await first.commit()  # v0, v1 done
        rest = await drain(first, 3)  # v2..v4 handed out but never committed: the "crash"
        assert [m.value for m in rest] == [b"v2", b"v3", b"v4"]
        await first.close()

        second = bus.consumer(topic, group)
        again = await drain(second, 3)
        assert [(m.offset, m.value) for m in again] == [(2, b"v2"), (3, b"v3"), (4, b"v4")]
        await second.close()


async def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    a, b = fresh("topics"), fresh("topics")
    async with running_bus(kafka_bootstrap, partitions=2) as bus:
        await bus.ensure_topics([a])
        await bus.ensure_topics([a, b, a])
        await asyncio.gather(bus.ensure_topics([a, b]), bus.ensure_topics([b]))
        producer = await bus._ensure_producer()
        assert len(await producer.partitions_for(a)) == 2
        assert len(await producer.partitions_for(b)) == 2
    # An existing topic keeps its partition count even if the settings changed since.
    async with running_bus(kafka_bootstrap, partitions=5) as bus:
        await bus.ensure_topics([a])
        producer = await bus._ensure_producer()
        assert len(await producer.partitions_for(a)) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_broker_raises_bus_unavailable_quickly() -> None:
    bus = KafkaBus(f"127.0.0.1:{_closed_port()}", BusSettings(kind="kafka"), request_timeout_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(BusUnavailable):
        await bus.start()
    with pytest.raises(BusUnavailable):
        await bus.producer().send_batch(fresh("down"), [(b"k", b"v")])
    with pytest.raises(BusUnavailable):
        await bus.ensure_topics([fresh("down")])
    with pytest.raises(BusUnavailable):
        await bus.consumer(fresh("down"), fresh("group")).poll(10, 0.1)
    await bus.stop()
    assert time.monotonic() - t0 < 20


async def test_silent_broker_times_out_as_bus_unavailable() -> None:
    """A peer that accepts TCP but never answers (hung broker) must not hang the caller."""
    conns: list[asyncio.StreamWriter] = []

    async def swallow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bus = KafkaBus(f"127.0.0.1:{port}", BusSettings(kind="kafka"), request_timeout_s=1.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(BusUnavailable):
            await bus.producer().send_batch(fresh("hung"), [(b"k", b"v")])
        assert time.monotonic() - t0 < 10
    finally:
        await bus.stop()
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()


async def test_ensure_topics_reports_impossible_topics_as_bus_error(kafka_bootstrap: str) -> None:
    """A config mistake (replication > brokers) is a BusError, not a retry-later BusUnavailable."""
    from trailmark.bus.base import BusError

    async with running_bus(kafka_bootstrap, replication=3) as bus:
        with pytest.raises(BusError) as info:
            await bus.ensure_topics([fresh("rf3")])
        assert not isinstance(info.value, BusUnavailable)
