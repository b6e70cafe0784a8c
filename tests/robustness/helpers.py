"""Records written straight into a running server's embedded log, as an older version or another
producer could have left them: input the collector's checks never see. And readings of the
server's health (/readyz, /metrics)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from schemas import SCHEMA_VERSION, bus_time
from tests.conftest import CHROME_UA, Server
from trailmark.bus.embedded import EmbeddedBus

RAW = "trailmark.raw"
DEAD_LETTER = "trailmark.dead_letter"


def log_path(server: Server) -> Path:
    return server.data_dir / "log" / "events.sqlite3"


def raw_record(site_id: str, body: bytes) -> bytes:
    """A raw-topic record as the collector builds it: server facts around the client's bytes,
    which go in unchanged (they need not even be valid JSON)."""
    return orjson.dumps({"v": SCHEMA_VERSION, "site_id": site_id, "received_at": bus_time(datetime.now(UTC)),
                         "ip": "81.2.69.142", "user_agent": CHROME_UA, "body": orjson.Fragment(body)})


def append(server: Server, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Append records to a topic of the server's log through the embedded bus (SQLite locks make
    a second writer process safe; the server's consumers look for other writers' rows)."""

    async def go() -> None:
        bus = EmbeddedBus(log_path(server))
        await bus.start()
        try:
            await bus.producer().send_batch(topic, records)
        finally:
            await bus.stop()

    asyncio.run(go())


def append_damaged_row(server: Server, topic: str) -> int:
    """A row whose frames cannot be decoded (a damaged log file); returns its offset."""
    with sqlite3.connect(log_path(server), timeout=30) as conn:
        cur = conn.execute(f"INSERT INTO t_{topic.replace('.', '_')} (records, frames) VALUES (1, ?)",
                           (b"\x01\x02\x03",))
        return int(cur.lastrowid or 0)


def readyz(server: Server) -> tuple[int, dict[str, Any]]:
    r = httpx.get(server.url + "/readyz", timeout=10)
    body: dict[str, Any] = r.json()
    return r.status_code, body


def metric(server: Server, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels`` (0 when absent)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def json_with(value: Any, **raw: str) -> bytes:
    """``value`` as JSON, each string ``"@name@"`` in it replaced by the raw JSON text ``raw[name]``
    (what no JSON library writes: 300 nested arrays, integers over 64 bits, NaN...)."""
    text = orjson.dumps(value)
    for name, replacement in raw.items():
        text = text.replace(f'"@{name}@"'.encode(), replacement.encode())
    return text
