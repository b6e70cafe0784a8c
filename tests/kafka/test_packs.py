"""Records packed per partition on Kafka (trailmark/bus/kafka.py): what a stage sees is the same as
one Kafka record per event — keys, order, partitions, at-least-once — while far fewer Kafka records
travel. Against the real broker; the pack format itself is checked without one."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from trailmark.bus.base import Message
from trailmark.bus.frames import FramesError, decode_frames, encode_frames
from trailmark.bus.kafka import PACK_HEADER, PACK_MAX_RECORDS, _packs

from .test_kafka_bus import drain, fresh, running_bus


def test_frames_roundtrip_and_refuse_what_is_not_frames() -> None:
    records = [(b"", b""), (b"k", b"v" * 300), (b"\x00" * 5, b"{}")]
    blob = encode_frames(records)
    assert decode_frames(blob) == records
    for bad in (blob[:-1], blob[:7], b"\xff" * 8, blob + b"\x01"):
        with pytest.raises(FramesError):
            decode_frames(bad)


def test_packs_keep_each_partitions_order_and_respect_the_caps() -> None:
    records = [(f"v{i % 7}".encode(), f"{i}".encode() * 40) for i in range(3000)]
    sent: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for partition, key, value, packed in _packs(records, 6, 10_000):
        inner = decode_frames(value) if packed else [(key or b"", value)]
        assert len(inner) <= PACK_MAX_RECORDS
        assert len(value) <= 10_000 or not packed
        sent[partition] += inner
    assert sorted(r for rs in sent.values() for r in rs) == sorted(records)
    for partition, rs in sent.items():
        assert rs == [r for r in records if r in set(rs)], f"partition {partition} out of order"
    # a partition with a single record sends it as it is, with its key
    [(partition, key, value, packed)] = list(_packs([(b"solo", b"x")], 6, 10_000))
    assert (key, value, packed) == (b"solo", b"x", False)


@pytest.mark.kafka
@pytest.mark.asyncio(loop_scope="session")
async def test_packed_records_land_where_their_key_alone_would(kafka_bootstrap: str) -> None:
    """A pack goes to the partition Kafka's default partitioner gives each of its keys: the same as a
    record sent alone (by aiokafka, or by a Java or librdkafka producer), so visitors keep their
    partition across versions and producers."""
    topic = fresh("packs")
    keys = [f"anon-{i}".encode() for i in range(40)]
    async with running_bus(kafka_bootstrap, partitions=6) as bus:
        await bus.ensure_topics([topic])
        await bus.producer().send_batch(topic, [(k, b"%d" % j) for j in range(5) for k in keys])
        plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await plain.start()
        try:
            alone = {k: (await plain.send_and_wait(topic, b"alone", key=k)).partition for k in keys}
        finally:
            await plain.stop()
        got = await drain(bus.consumer(topic, fresh("group")), len(keys) * 6)
        raw = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await raw.start()
        try:
            kafka_records = 0
            deadline = time.monotonic() + 20
            while kafka_records < 6 + len(keys) and time.monotonic() < deadline:
                for records in (await raw.getmany(timeout_ms=500)).values():
                    kafka_records += len(records)
        finally:
            await raw.stop()
    for m in got:
        assert m.partition == alone[m.key], f"{m.key!r} packed into another partition than alone"
    per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for m in got:
        per_key[m.key].append(m.value)
    assert all(values == [b"0", b"1", b"2", b"3", b"4", b"alone"] for values in per_key.values())
    # 200 events took one Kafka record per partition, plus the 40 sent alone
    assert kafka_records == 6 + len(keys)


@pytest.mark.kafka
@pytest.mark.asyncio(loop_scope="session")
async def test_a_poll_hands_out_whole_packs_and_commits_never_fall_inside_one(kafka_bootstrap: str) -> None:
    """poll(max_records) hands out whole packs (the first even if larger than max_records) and keeps
    the records fetched beyond it for the next poll: a commit then covers exactly what was handed
    out, so the group's next consumer neither repeats nor skips a message."""
    topic, group = fresh("bigpack"), fresh("group")
    key = b"one-visitor"
    packs = [[b"%d-%03d" % (p, i) for i in range(300)] for p in range(3)]
    async with running_bus(kafka_bootstrap, partitions=1) as bus:
        await bus.ensure_topics([topic])
        for values in packs:
            await bus.producer().send_batch(topic, [(key, v) for v in values])
        first = bus.consumer(topic, group)
        part: list[Message] = []
        deadline = time.monotonic() + 20
        while not part and time.monotonic() < deadline:
            part = await first.poll(max_records=100, timeout_s=0.5)
        assert [m.value for m in part] == packs[0]
        if first.lag() == 600:  # fetched with the first pack: held for the next polls
            assert [m.value for m in await first.poll(max_records=100, timeout_s=0.5)] == packs[1]
            assert first.lag() == 300
            await first.commit()
            handed = 2
        else:
            await first.commit()
            handed = 1
        await first.close()
        second = bus.consumer(topic, group)
        rest = await drain(second, 300 * (3 - handed))
        assert [m.value for m in rest] == [v for values in packs[handed:] for v in values]
        await second.commit()
        await second.close()


@pytest.mark.kafka
@pytest.mark.asyncio(loop_scope="session")
async def test_a_broken_pack_is_passed_on_whole(kafka_bootstrap: str) -> None:
    """A record that says it is a pack but is not frames (another producer's, or damaged) reaches the
    stage as it is, where it is dead-lettered as unreadable; the records after it still arrive."""
    topic = fresh("brokenpack")
    async with running_bus(kafka_bootstrap, partitions=1) as bus:
        await bus.ensure_topics([topic])
        plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await plain.start()
        try:
            await plain.send_and_wait(topic, b"\xff\xff\xff\xffgarbage", key=b"k", headers=[PACK_HEADER])
            await plain.send_and_wait(topic, b"", key=b"k", headers=[PACK_HEADER])
            await plain.send_and_wait(topic, b'{"ok":1}', key=b"k")
        finally:
            await plain.stop()
        got = await drain(bus.consumer(topic, fresh("group")), 3)
    assert [m.value for m in got] == [b"\xff\xff\xff\xffgarbage", b"", b'{"ok":1}']
