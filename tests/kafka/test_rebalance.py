"""Consumer groups on a real broker: journey builders joining and dying give the journeys of one builder.

One stream of events (visitors with several sessions split by inactivity and by campaign, an email
identify on one device and a userId identify on another that merges it, conversions, a return
after a purchase) goes through two pipelines on the same broker, each with fresh topics, groups and
database on the chDB-backed ClickHouse HTTP endpoint (chDB allows one process per data path; two
builders need a server):

- one journey builder;
- two journey builders in one group (6 partitions), the first killed with SIGKILL while the stream
  flows (its partitions move after the group's session timeout; it may die between the inserts of
  a batch) and a third one joining later (partitions move again, with writes in flight).

Sessions, touchpoints, identities, the identity map, stage entries, each event's session and the
attribution report must be identical, row for row. Session ids derive from the session's first
event and touchpoint ids from the session or the event, so they are compared too; version columns
are not in the public views.

The stream is sent in phases, each stored before the next is sent: the merge of one device's email
contact into another device's user contact reads what the other builder wrote, which within one
phase would depend on which partition is read first, with one builder as with two.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.chserver import ClickHouseEndpoint, clickhouse_endpoint  # noqa: F401  (fixture)
from tests.conftest import CHROME_UA
from tests.kafka.pipeline import T0, Stage, bus_env, fresh
from trailmark.bus.base import Message
from trailmark.bus.kafka import KafkaBus
from trailmark.results import Failed, Ok
from trailmark.runtime import Batch, StageRunner
from trailmark.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

VISITORS = 24  # 12 people, two devices each
CONVERSION = "Order Completed"

Event = dict[str, Any]


def _at(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _page(anon: str, mid: str, t: datetime, path: str, referrer: str = "") -> Event:
    page = {"url": f"https://shop.example{path}", "title": path}
    if referrer:
        page["referrer"] = referrer
    return {"type": "page", "anonymousId": anon, "messageId": mid, "timestamp": _at(t), "context": {"page": page}}


def _track(anon: str, mid: str, t: datetime, name: str, path: str, **props: Any) -> Event:
    return {
        "type": "track",
        "event": name,
        "anonymousId": anon,
        "messageId": mid,
        "timestamp": _at(t),
        "properties": props,
        "context": {"page": {"url": f"https://shop.example{path}"}},
    }


def _identify(anon: str, mid: str, t: datetime, email: str, user_id: str = "") -> Event:
    ev: Event = {
        "type": "identify",
        "anonymousId": anon,
        "messageId": mid,
        "timestamp": _at(t),
        "traits": {"email": email, "plan": f"plan-{mid[-1]}"},
    }
    if user_id:
        ev["userId"] = user_id
    return ev


def phases() -> list[dict[str, list[Event]]]:
    """Four phases of events per visitor, each visitor's in time order. Visitors 2k (device A) and
    2k+1 (device B) are person k: A identifies by email in phase 2, B by userId and the same email
    in phase 3 (A's email contact is merged into B's user contact), A by email again in phase 4."""
    out: list[dict[str, list[Event]]] = [{}, {}, {}, {}]
    for i in range(VISITORS):
        anon, k, device_a = f"rb{i:02d}", i // 2, i % 2 == 0
        email = f"person{k}@acme.io"
        b = T0 + timedelta(minutes=i)
        n = iter(range(1000))

        def mid(anon: str = anon, n: Iterator[int] = n) -> str:
            return f"{anon}-{next(n):03d}"

        # session 1: organic search
        out[0][anon] = [
            _page(anon, mid(), b, "/", "https://www.google.com/"),
            _page(anon, mid(), b + timedelta(minutes=1), f"/product/{i}"),
            _track(anon, mid(), b + timedelta(minutes=2), "Product Viewed", f"/product/{i}", sku=f"S{i}"),
            _page(anon, mid(), b + timedelta(minutes=3), "/features"),
        ]
        # session 2, after two hours of inactivity: a newsletter campaign, then a long browse
        s2 = b + timedelta(hours=2)
        p2 = [_page(anon, mid(), s2, "/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=spring")]
        if device_a:
            p2.append(_identify(anon, mid(), s2 + timedelta(seconds=30), email))
        p2 += [_page(anon, mid(), s2 + timedelta(minutes=1, seconds=20 * j), f"/blog/{j}") for j in range(20)]
        out[1][anon] = p2
        # session 3, ten minutes later: another campaign starts a new session
        s3 = s2 + timedelta(minutes=20)
        p3 = [_page(anon, mid(), s3, "/cart?utm_source=facebook&utm_medium=cpc&utm_campaign=retarget")]
        p3 += [_page(anon, mid(), s3 + timedelta(seconds=5 * (j + 1)), f"/cart/item/{j}") for j in range(10)]
        p3.append(
            _identify(anon, mid(), s3 + timedelta(minutes=1), email, f"user{k}")
            if not device_a
            else _track(anon, mid(), s3 + timedelta(minutes=1), "Checkout Started", "/checkout")
        )
        if i % 3 != 2:
            p3.append(
                _track(
                    anon, mid(), s3 + timedelta(minutes=2), CONVERSION, "/checkout/done", revenue=10 + i, currency="EUR"
                )
            )
        out[2][anon] = p3
        # session 4, the next day: a direct return (Retention after a purchase), a review
        s4 = b + timedelta(days=1)
        p4 = [_page(anon, mid(), s4, "/")]
        if device_a:
            p4.append(_identify(anon, mid(), s4 + timedelta(minutes=1), email))
        if i % 4 == 0:
            p4.append(_track(anon, mid(), s4 + timedelta(minutes=2), "Review Submitted", "/reviews"))
        p4.append(_page(anon, mid(), s4 + timedelta(minutes=3), "/account"))
        out[3][anon] = p4
    return out


class Run:
    """Collector, enricher and journey builders on fresh topics, groups and database."""

    def __init__(self, root: Path, bootstrap: str, endpoint: ClickHouseEndpoint, keys: Path | None) -> None:
        self.root = root
        self.endpoint = endpoint
        self.database = f"rb_{uuid.uuid4().hex[:10]}"
        self.env = bus_env(
            bootstrap,
            TRAILMARK_CLICKHOUSE_URL=endpoint.url,
            TRAILMARK_STORAGE__DATABASE=self.database,
            TRAILMARK_BUS__PARTITIONS="6",
        )
        self.keys = keys
        self.builders: list[Stage] = []
        self.others: list[Stage] = []

    def _stage(self, command: str, name: str) -> Stage:
        stage = Stage([command], self.root / name / "data", self.env)
        if self.keys is not None:  # every stage, in both runs, serves the same site
            stage.data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.keys, stage.data_dir / "keys.json")
        return stage

    def add_builder(self) -> Stage:
        builder = self._stage("journey-builder", f"journeys{len(self.builders)}")
        self.builders.append(builder)
        builder.start()
        if self.keys is None:
            self.keys = builder.data_dir / "keys.json"
        return builder

    def start(self, builders: int) -> Run:
        for _ in range(builders):
            self.add_builder()
        self.enricher = self._stage("enricher", "enricher").start()
        self.collector = self._stage("collector", "collector").start()
        self.others = [self.enricher, self.collector]
        return self

    def close(self) -> None:
        for stage in [*reversed(self.others), *self.builders]:
            if stage.alive:
                stage.terminate(timeout=20)

    @property
    def site(self) -> dict[str, Any]:
        assert self.keys is not None
        site: dict[str, Any] = orjson.loads(self.keys.read_bytes())["sites"][0]
        return site

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows straight from the ClickHouse endpoint (every table and view of this run's database)."""
        r = httpx.post(
            self.endpoint.url,
            params={"database": self.database, "default_format": "JSONEachRow"},
            content=sql.encode(),
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return [orjson.loads(line) for line in r.content.splitlines() if line.strip()]

    def post(
        self, per_visitor: dict[str, list[Event]], per_request: int = 2, threads: int = 4, pause_s: float = 0.0
    ) -> None:
        """Each visitor's events in order, a few per request, visitors spread over a few threads."""
        url, key = self.collector.url, self.site["write_key"]
        anons = sorted(per_visitor)
        failures: list[str] = []

        def send(mine: list[str]) -> None:
            with httpx.Client(timeout=30) as client:
                for anon in mine:
                    events = per_visitor[anon]
                    for at in range(0, len(events), per_request):
                        body = orjson.dumps({"batch": events[at : at + per_request]})
                        for _ in range(100):
                            try:
                                r = client.post(
                                    f"{url}/v1/batch",
                                    content=body,
                                    auth=(key, ""),
                                    headers={"content-type": "application/json", "user-agent": CHROME_UA},
                                )
                            except httpx.HTTPError:
                                time.sleep(0.2)
                                continue
                            if r.status_code == 200 and not r.json()["rejected"]:
                                time.sleep(pause_s)
                                break
                            if r.status_code != 503:
                                failures.append(f"{r.status_code}: {r.text[:300]}")
                                return
                            time.sleep(0.2)

        workers = [threading.Thread(target=send, args=(anons[t::threads],), daemon=True) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert not failures, failures[:3]

    def wait_stored(self, expected: int, timeout: float = 60) -> None:
        """Until trailmark.events holds ``expected`` rows, and still does a moment later (no duplicate)."""
        deadline = time.time() + timeout
        while (n := self.query("SELECT count() AS n FROM events")[0]["n"]) < expected:
            if time.time() > deadline:
                tails = "\n".join(f"--- {b.command} {b.port}:\n{b.tail(1500)}" for b in self.builders)
                raise AssertionError(f"{n} of {expected} events stored\n{tails}")
            time.sleep(0.2)
        time.sleep(1.0)
        assert self.query("SELECT count() AS n FROM events")[0]["n"] == expected, "an event was stored twice"

    def journeys(self, reader: Stage) -> dict[str, Any]:
        """Everything the comparison covers, in a stable order."""
        read = {"authorization": f"Bearer {self.site['read_key']}"}
        attribution = {}
        for model in ("linear", "last_non_direct", "time_decay"):
            r = httpx.get(
                f"{reader.url}/v1/attribution",
                headers=read,
                timeout=30,
                params={"conversion": CONVERSION, "model": model, "by": "channel", "details": "true"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            body["conversions"] = sorted(body["conversions"], key=lambda c: c["message_id"])
            attribution[model] = body
        return {
            "sessions": self.query("SELECT * FROM sessions ORDER BY session_id"),
            "touchpoints": self.query("SELECT * FROM touchpoints ORDER BY touchpoint_id, kind"),
            "identities": self.query("SELECT * FROM identities ORDER BY anonymous_id, contact_id, user_id, email"),
            "identity_map": self.query("SELECT * FROM identity_map ORDER BY anonymous_id"),
            "stage_transitions": self.query("SELECT * FROM stage_transitions ORDER BY contact_id, stage"),
            "event_sessions": self.query("SELECT message_id, session_id FROM events ORDER BY message_id"),
            "attribution": attribution,
        }


def _processed(stage: Stage) -> float:
    return stage.metric("trailmark_stage_records_total", stage="journeys")


def test_two_builders_one_killed_one_joining_give_the_journeys_of_one(
    tmp_path: Path,
    kafka_bootstrap: str,
    clickhouse_endpoint: ClickHouseEndpoint,  # noqa: F811
) -> None:
    stream = phases()
    sizes = [sum(len(v) for v in p.values()) for p in stream]

    one = Run(tmp_path / "one", kafka_bootstrap, clickhouse_endpoint, None).start(builders=1)
    try:
        total = 0
        for phase, size in zip(stream, sizes, strict=True):
            one.post(phase)
            total += size
            one.wait_stored(total)
        expected = one.journeys(one.builders[0])
    finally:
        one.close()

    group = Run(tmp_path / "group", kafka_bootstrap, clickhouse_endpoint, one.keys).start(builders=2)
    try:
        first, second = group.builders
        enriched = group.env["TRAILMARK_BUS__TOPIC_ENRICHED"]
        assigned = f"Setting newly assigned partitions {{TopicPartition(topic='{enriched}'"
        # ready is not yet a member: until the group has given the second builder its share, the
        # first (which joined alone) holds every partition and may take the whole first phase
        deadline = time.time() + 60
        while assigned not in second.tail(10**6):
            assert time.time() < deadline, second.tail()
            time.sleep(0.1)
        group.post(stream[0])
        group.wait_stored(sizes[0])
        assert _processed(first) > 0 and _processed(second) > 0, "both builders own partitions"

        # Phase 2: the first builder dies with SIGKILL while the stream flows; its partitions move
        # to the second once the group's session timeout has passed.
        poster = threading.Thread(
            target=group.post, args=(stream[1],), kwargs={"per_request": 1, "pause_s": 0.01}, daemon=True
        )
        poster.start()
        deadline = time.time() + 30
        while group.query("SELECT count() AS n FROM events")[0]["n"] < sizes[0] + sizes[1] // 3:
            assert time.time() < deadline, first.tail()
            time.sleep(0.05)
        first.kill()
        poster.join(120)
        group.wait_stored(sum(sizes[:2]))

        # Phase 3: a third builder joins while the stream flows (the second's writes are in flight).
        third = group.add_builder()
        poster = threading.Thread(
            target=group.post, args=(stream[2],), kwargs={"per_request": 1, "pause_s": 0.01}, daemon=True
        )
        poster.start()
        deadline = time.time() + 30
        while assigned not in third.tail(10**6):
            assert time.time() < deadline, third.tail()
            time.sleep(0.1)
        poster.join(120)
        group.wait_stored(sum(sizes[:3]))
        group.post(stream[3])
        group.wait_stored(sum(sizes))
        assert _processed(third) > 0, "the third builder took over partitions"
        got = group.journeys(second)
    finally:
        group.close()

    assert len(expected["sessions"]) == VISITORS * 4
    assert expected["attribution"]["linear"]["total_conversions"] == sum(1 for i in range(VISITORS) if i % 3 != 2)
    for part, rows in expected.items():
        if got[part] != rows and isinstance(rows, list):
            one_only = [r for r in rows if r not in got[part]]
            group_only = [r for r in got[part] if r not in rows]
            pytest.fail(
                f"{part} differ between one builder and a group of builders:\n one builder only:"
                f" {one_only[:5]}\n group only: {group_only[:5]}",
                pytrace=False,
            )
        assert got[part] == rows, f"{part} differ between one builder and a group of builders"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_revocation_waits_for_the_batch_being_written_and_drops_the_one_polled(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """The runner level of the test above, made deterministic: a consumer joins while the runner's
    write of batch 1 is held. The partitions move only once that write is done and committed, and
    batch 2 (polled before the rebalance) is not written: its records go to their partition's
    owner. So no record is written by the runner and delivered to the newcomer as well."""
    settings = Settings(
        data_dir=tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        bus={"kind": "kafka", "partitions": 2, "topic_dead_letter": fresh("dead")},
    )
    topic, group = fresh("revoke"), fresh("g-revoke")
    bus = KafkaBus(kafka_bootstrap, settings.bus)
    await bus.start()
    await bus.ensure_topics([topic])
    for start in range(0, 40, 4):  # small packs (one per partition and call): batches of 5 split them
        await bus.producer().send_batch(topic, [(f"k{i}".encode(), b"%d" % i) for i in range(start, start + 4)])

    # messages are named by their value: the records of one pack share a Kafka offset
    written: list[bytes] = []
    first_write, release = asyncio.Event(), asyncio.Event()

    async def write(ok: list[Ok[Message]]) -> list[Failed]:
        if not first_write.is_set():
            first_write.set()
            await release.wait()
        written.extend(o.value.value for o in ok)
        return []

    runner = StageRunner(
        "revoke-test",
        bus,
        settings,
        topic,
        group,
        5,
        lambda messages: Batch(ok=[Ok(m.key, m) for m in messages]),
        write,
    )
    running = asyncio.create_task(runner.run())
    newcomer = bus.consumer(topic, group)
    received: list[bytes] = []
    try:
        await asyncio.wait_for(first_write.wait(), 30)
        await asyncio.sleep(1)  # batch 2 is polled and processed meanwhile, waiting for batch 1

        async def take() -> None:
            while True:
                received.extend(m.value for m in await newcomer.poll(100, 0.5))

        taking = asyncio.create_task(take())
        await asyncio.sleep(8)  # heartbeat (3 s) + join: the group would have moved partitions by now
        assert received == [], "partitions moved while a batch of theirs was still being written"
        release.set()
        deadline = time.monotonic() + 30
        while len(set(written) | set(received)) < 40:
            assert time.monotonic() < deadline, (sorted(written), sorted(received))
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        taking.cancel()
    finally:
        release.set()
        runner.stopping.set()
        await asyncio.wait_for(running, 30)
        await newcomer.close()
        await bus.stop()
    assert received, "the newcomer owns a partition"
    assert len(written) == len(set(written)), "the runner wrote a record twice"
    assert not set(written) & set(received), "records written by the runner were delivered to the newcomer too"
