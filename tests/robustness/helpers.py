"""Records written straight into a running server's embedded log, as an older version or another
producer could have left them: input the collector's checks never see. And readings of the
server's health (/readyz, /metrics)."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from schemas import SCHEMA_VERSION, bus_time
from tests.conftest import CHROME_UA, Server
from trailmark.bus.embedded import EmbeddedBus
from trailmark.bus.frames import decode_frames

RAW = "trailmark.raw"
DEAD_LETTER = "trailmark.dead_letter"
# the dead-letter topic stays in the log for the test to read (read keys cannot see dead_letters)
KEEP_LOG = {"TRAILMARK_BUS__TRUNCATE_INTERVAL_S": "86400"}


def log_path(server: Server) -> Path:
    return server.data_dir / "log" / "events.sqlite3"


def raw_record(site_id: str, body: bytes) -> bytes:
    """A raw-topic record as the collector builds it: server facts around the client's bytes,
    which go in unchanged (they need not even be valid JSON)."""
    return orjson.dumps(
        {
            "v": SCHEMA_VERSION,
            "site_id": site_id,
            "received_at": bus_time(datetime.now(UTC)),
            "ip": "81.2.69.142",
            "user_agent": CHROME_UA,
            "body": orjson.Fragment(body),
        }
    )


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
        cur = conn.execute(
            f"INSERT INTO t_{topic.replace('.', '_')} (records, frames) VALUES (1, ?)", (b"\x01\x02\x03",)
        )
        return int(cur.lastrowid or 0)


def readyz(server: Server) -> tuple[int, dict[str, Any]]:
    r = httpx.get(server.url + "/readyz", timeout=10)
    body: dict[str, Any] = r.json()
    return r.status_code, body


def metric(server: Server, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels`` (0 when absent)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def json_with(value: Any, **raw: str) -> bytes:
    """``value`` as JSON, each string ``"@name@"`` in it replaced by the raw JSON text ``raw[name]``
    (what no JSON library writes: 300 nested arrays, integers over 64 bits, NaN...)."""
    text = orjson.dumps(value)
    for name, replacement in raw.items():
        text = text.replace(f'"@{name}@"'.encode(), replacement.encode())
    return text


def dead_letters_on_log(server: Server) -> list[dict[str, Any]]:
    """Every record of the dead-letter topic in the server's log (start it with KEEP_LOG); a
    base64 payload (a record that was not UTF-8) is decoded, invalid bytes replaced."""
    with sqlite3.connect(log_path(server), timeout=30) as conn:
        rows = conn.execute("SELECT frames FROM t_trailmark_dead_letter ORDER BY offset").fetchall()
    records = [orjson.loads(value) for (frames,) in rows for _, value in decode_frames(frames)]
    for rec in records:
        if rec["payload_encoding"] == "base64":
            rec["payload"] = base64.b64decode(rec["payload"]).decode("utf-8", "replace")
    return records


_OFFLINE = """
import sys
import time
from pathlib import Path
import orjson
from trailmark.storage.chdb_backend import ChdbStorage
rows = ChdbStorage(Path(sys.argv[1]), read_sessions=1).query(sys.argv[2])
sys.stdout.buffer.write(orjson.dumps(rows))
"""


def offline_query(server: Server, query: str) -> list[dict[str, Any]]:
    """A query on the stopped server's chDB store, from a process of its own (chDB lets one process
    open a data path): for tables read keys cannot see, such as ``dead_letters``."""
    assert not server.alive, "stop the server first: chDB allows one process per data path"
    out = subprocess.run(
        [sys.executable, "-c", _OFFLINE, str(server.data_dir / "clickhouse"), query],
        capture_output=True,
        check=True,
        timeout=120,
    )
    rows: list[dict[str, Any]] = orjson.loads(out.stdout)
    return rows


def wait_consumed(server: Server, topic: str, group: str, timeout: float = 20) -> None:
    """Wait until ``group`` has committed past every row of ``topic`` in the server's log."""
    table = f"t_{topic.replace('.', '_')}"
    deadline = time.time() + timeout
    while True:
        with sqlite3.connect(log_path(server), timeout=30) as conn:
            last = conn.execute(f"SELECT max(offset) FROM {table}").fetchone()[0] or 0
            row = conn.execute(
                "SELECT next_offset FROM consumer_offsets WHERE grp = ? AND topic = ?", (group, topic)
            ).fetchone()
        if row is not None and row[0] > last:
            return
        assert time.time() < deadline, f"{group} never consumed {topic}\n{server.tail()}"
        time.sleep(0.1)
