"""The three stages as separate ``trailmark`` processes on a real broker, and a client that posts
events like the tracker does (retrying on 503 / connection errors) and remembers what was acked."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.conftest import CHROME_UA, TrailmarkProcess


def fresh(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:10]}"


def bus_env(bootstrap: str, **extra: str) -> dict[str, str]:
    """Fresh topics and groups, so tests sharing one broker never see each other's records."""
    return {
        "TRAILMARK_KAFKA_BOOTSTRAP": bootstrap,
        "TRAILMARK_BUS__TOPIC_RAW": fresh("raw"),
        "TRAILMARK_BUS__TOPIC_ENRICHED": fresh("enriched"),
        "TRAILMARK_BUS__TOPIC_DEAD_LETTER": fresh("dead"),
        "TRAILMARK_BUS__GROUP_ENRICH": fresh("g-enrich"),
        "TRAILMARK_BUS__GROUP_JOURNEYS": fresh("g-journeys"),
        "TRAILMARK_BUS__GROUP_DEAD_LETTERS": fresh("g-dead"),
        **extra,
    }


class Stage(TrailmarkProcess):
    """One stage process (``trailmark collector`` / ``enricher`` / ``journey-builder`` / ``up ...``)."""

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            got = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p)
            if all(got.get(k) == f'"{v}"' for k, v in labels.items()):
                total += float(value)
        return total


class Pipeline:
    """journey-builder (owns chDB), enricher and collector as three processes, keys shared."""

    def __init__(self, root: Path, bootstrap: str, **env: str) -> None:
        self.root = root
        self.env = bus_env(bootstrap, **env)
        self.journeys = Stage(["journey-builder"], root / "journeys" / "data", self.env)
        self.enricher = Stage(["enricher"], root / "enricher" / "data", self.env)
        self.collector = Stage(["collector"], root / "collector" / "data", self.env)

    def stages(self) -> list[Stage]:
        return [self.journeys, self.enricher, self.collector]

    def start(self) -> Pipeline:
        self.journeys.start()  # creates keys.json; the other stages get a copy
        for stage in (self.enricher, self.collector):
            stage.data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.journeys.data_dir / "keys.json", stage.data_dir / "keys.json")
        self.enricher.start()
        self.collector.start()
        return self

    def close(self) -> None:
        for stage in reversed(self.stages()):
            if stage.alive:
                stage.terminate(timeout=20)

    @property
    def site(self) -> dict[str, Any]:
        site: dict[str, Any] = orjson.loads((self.journeys.data_dir / "keys.json").read_bytes())["sites"][0]
        return site

    def sql(self, query: str) -> list[dict[str, Any]]:
        r = httpx.post(
            f"{self.journeys.url}/v1/sql",
            json={"query": query},
            headers={"authorization": f"Bearer {self.site['read_key']}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["rows"]
        return rows

    def stored_ids(self) -> list[str]:
        return [r["message_id"] for r in self.sql("SELECT message_id FROM trailmark.events")]

    def wait_stored(self, expected: set[str], timeout: float = 90) -> list[str]:
        """Wait until every expected messageId is in trailmark.events; returns all stored ids."""
        deadline = time.time() + timeout
        ids: list[str] = []
        while time.time() < deadline:
            try:
                ids = self.stored_ids()
            except (httpx.HTTPError, AssertionError):
                ids = []
            if expected <= set(ids):
                time.sleep(1.5)  # anything extra (a duplicate) would show up now
                return self.stored_ids()
            time.sleep(0.3)
        missing = expected - set(ids)
        raise AssertionError(
            f"{len(missing)} of {len(expected)} acked events never stored, e.g. "
            f"{sorted(missing)[:5]}\n--- enricher:\n{self.enricher.tail(2000)}\n"
            f"--- journeys:\n{self.journeys.tail(2000)}"
        )


T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def page(visitor: str, seq: int, at: datetime, path: str | None = None) -> dict[str, Any]:
    return {
        "type": "page",
        "anonymousId": visitor,
        "messageId": f"{visitor}-{seq:05d}",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "context": {"page": {"url": f"https://shop.example{path or f'/p/{seq}'}", "title": f"p{seq}"}},
    }


class Poster(threading.Thread):
    """Posts one visitor's events in order, request after request, as a tracker would: a 503 or a
    connection error is retried (same body, same messageIds) until the collector answers 200.
    ``acked`` holds the messageIds of every answered-200 request."""

    def __init__(
        self,
        url: str,
        write_key: str,
        visitors: list[str],
        per_request: int = 5,
        requests: int | None = None,
        pause_s: float = 0.0,
        retry_s: float = 0.3,
    ) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.write_key = write_key
        self.visitors = visitors
        self.per_request = per_request
        self.requests = requests
        self.pause_s = pause_s
        self.retry_s = retry_s
        self.acked: list[str] = []
        self.statuses: dict[int, int] = {}
        self.retry_after: set[str] = set()
        self.errors = 0
        self.failures: list[str] = []
        self.halt = threading.Event()
        self.seq = 0

    def run(self) -> None:
        sent = 0
        with httpx.Client(timeout=30) as client:
            while not self.halt.is_set() and (self.requests is None or sent < self.requests):
                visitor = self.visitors[sent % len(self.visitors)]
                events = []
                for _ in range(self.per_request):
                    self.seq += 1
                    events.append(page(visitor, self.seq, T0 + timedelta(seconds=self.seq)))
                self._deliver(client, {"batch": events})
                sent += 1
                if self.pause_s:
                    time.sleep(self.pause_s)

    def _deliver(self, client: httpx.Client, body: dict[str, Any]) -> None:
        content = orjson.dumps(body)
        while True:
            try:
                r = client.post(
                    f"{self.url}/v1/batch",
                    content=content,
                    auth=(self.write_key, ""),
                    headers={"content-type": "application/json", "user-agent": CHROME_UA},
                )
            except httpx.HTTPError:
                self.errors += 1
                time.sleep(self.retry_s)
                continue
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
            if r.status_code == 200 and r.json()["accepted"] == len(body["batch"]):
                self.acked.extend(e["messageId"] for e in body["batch"])
                return
            if r.status_code != 503:
                self.failures.append(f"{r.status_code}: {r.text[:300]}")
                return
            if "retry-after" in r.headers:
                self.retry_after.add(r.headers["retry-after"])
            time.sleep(self.retry_s)

    def finish(self, timeout: float = 120) -> None:
        self.halt.set()
        self.join(timeout)
        assert not self.is_alive(), "poster still retrying"
        assert not self.failures, self.failures[:5]
