"""The embedded log translates SQLite's operational errors (a locked file, an I/O error) into
BusUnavailable at its boundary, so the runner retries without committing instead of crashing; a
damaged row is not translated (the stage crash-loops and /readyz says so: tests/robustness)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trailmark.bus.base import BusUnavailable
from trailmark.bus.embedded import EmbeddedBus


async def test_sqlite_operational_errors_are_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = EmbeddedBus(tmp_path / "events.sqlite3")
    await bus.start()
    await bus.ensure_topics(["t"])
    await bus.producer().send_batch("t", [(b"k", b"v")])
    consumer = bus.consumer("t", "g")

    def locked(*_: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    with monkeypatch.context() as m:
        m.setattr(consumer, "_read", locked)
        with pytest.raises(BusUnavailable, match="embedded log read failed: database is locked"):
            await consumer.poll(10, 0.1)
    messages = await consumer.poll(10, 1)
    assert [msg.value for msg in messages] == [b"v"]
    with monkeypatch.context() as m:
        m.setattr(consumer, "_commit", locked)
        with pytest.raises(BusUnavailable, match="commit failed"):
            await consumer.commit_upto(consumer.position())
    await consumer.commit_upto(consumer.position())  # and commits once the file is free again
    await consumer.close()
    await bus.stop()
