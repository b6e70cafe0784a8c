"""Harness for the client-library tests: the real ``trailmark up`` (tests.conftest.Server), the real
Segment and RudderStack SDKs (Python ones in-process or in their own virtualenv, Node ones as
subprocesses, browser ones in Debian chromium), and helpers that read back what was stored.

The SDKs are pinned in pyproject.toml (dev extra), tests/clients/package.json (npm) and
``PY14_REQUIREMENT`` (analytics-python 1.4 pins backoff 1.10, which conflicts with rudder-sdk-python,
so it lives in .cache/clients/py14); ``make test`` installs all three. Without them the tests skip,
saying why, and fail under CI=true, where a missing install step must be seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from tests.conftest import ROOT, Server

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
PY14 = ROOT / ".cache" / "clients" / "py14" / "bin" / "python"
PY14_REQUIREMENT = "analytics-python==1.4.post1"

T = TypeVar("T")


def need(ok: bool, message: str) -> None:
    """Skip a test whose client is not installed (fail in CI: the install step is missing)."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def need_node() -> str:
    node = shutil.which("node")
    need(
        node is not None and NODE_MODULES.is_dir(),
        "the npm SDKs are not installed: npm ci --prefix tests/clients (make test does it)",
    )
    assert node is not None
    return node


def until(fn: Callable[[], T], timeout: float = 30, what: str = "condition", every: float = 0.2) -> T:
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout}s; last: {last!r}")


def run_id() -> str:
    return uuid.uuid4().hex[:10]


def parse_time(text: str) -> datetime:
    """A stored DateTime64 ('2026-01-01 10:00:00.123', UTC) or a client's ISO-8601 time."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


EVENT_COLUMNS = ("message_id, type, event, anonymous_id, user_id, contact_id, toString(timestamp) AS timestamp,"
                 " toString(original_timestamp) AS original_timestamp, toString(received_at) AS received_at,"
                 " properties, traits, context, extra, page_path")  # fmt: skip


def stored(server: Server, where: str) -> list[dict[str, Any]]:
    """Rows of trailmark.events matching ``where``, JSON columns parsed."""
    rows = server.sql(f"SELECT {EVENT_COLUMNS} FROM trailmark.events WHERE {where} ORDER BY timestamp, message_id")
    for r in rows:
        for k in ("properties", "traits", "context", "extra"):
            r[k] = orjson.loads(r[k]) if r[k] else {}
    return rows


def wait_stored(server: Server, where: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    """Wait until ``n`` events match (then give the pipeline a moment to show any duplicate)."""
    until(lambda: len(stored(server, where)) >= n, timeout, f"{n} events WHERE {where}")
    return stored(server, where)


def by_message_id(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["message_id"]] = counts.get(r["message_id"], 0) + 1
    return counts


def contact(server: Server, contact_id: str) -> dict[str, Any]:
    rows = server.sql(f"SELECT * FROM trailmark.contacts WHERE contact_id = '{contact_id}'")
    assert len(rows) == 1, rows
    return rows[0]


def account(server: Server, group_id: str) -> dict[str, Any]:
    rows = server.sql(f"SELECT * FROM trailmark.accounts WHERE group_id = '{group_id}'")
    assert len(rows) == 1, rows
    row = rows[0]
    row["traits"] = orjson.loads(row["traits"])
    return row


def run_node(script: str, args: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    """Run tests/clients/<script> with node; it prints one JSON object (what the client saw)."""
    node = need_node()
    proc = subprocess.run([node, str(HERE / script), orjson.dumps(args).decode()], capture_output=True,
                          timeout=timeout, cwd=HERE)  # fmt: skip
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr.decode()[-4000:]}"
    lines = [line for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert lines, f"{script} printed no result:\n{proc.stdout.decode()[-2000:]}\n{proc.stderr.decode()[-2000:]}"
    out: dict[str, Any] = orjson.loads(lines[-1])
    return out


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real collector for the client tests; every test uses fresh ids."""
    srv = Server(tmp_path_factory.mktemp("clients") / "data").start()
    yield srv
    srv.stop()
