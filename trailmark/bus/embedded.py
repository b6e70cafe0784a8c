"""The embedded event log: SQLite in WAL mode, one table per topic, committed offsets per group.

It stands in for Kafka on one machine. A batch is acknowledged only after its transaction commits,
and WAL with ``synchronous=NORMAL`` survives a killed process (an OS crash may lose the last
transactions; set ``synchronous=FULL`` via ``durable_fsync`` to survive that too). Writers share one
connection and group-commit: every batch waiting while a transaction runs goes into the next one.

A row holds one producer batch (length-prefixed key/value frames), not one record: per-row costs in
SQLite dominate at collector rates, and a batch is written and read as a unit anyway. A consumer
commits whole rows; the record offset in a Message is ``row * 2**20 + index``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from trailmark.bus.base import BusUnavailable, Message, RevokeCallback
from trailmark.bus.frames import decode_frames, encode_frames

_SAFE = re.compile(r"[^a-zA-Z0-9_]")
_ROW_SHIFT = 20  # Message.offset = row << 20 | index in the row


def _table(topic: str) -> str:
    return "t_" + _SAFE.sub("_", topic)


class _Log:
    """The SQLite file and its one writer connection; used from worker threads under a lock."""

    def __init__(self, path: Path, durable_fsync: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.Lock()
        self.conn = self.connect(durable_fsync)
        with self.lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS consumer_offsets (grp TEXT, topic TEXT, next_offset INTEGER,"
                " PRIMARY KEY (grp, topic))"
            )

    def connect(self, durable_fsync: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable_fsync else 'NORMAL'}")
        return conn

    def ensure(self, topic: str) -> None:
        with self.lock:
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_table(topic)} (offset INTEGER PRIMARY KEY AUTOINCREMENT,"
                " records INTEGER, frames BLOB)"
            )

    def append(self, batches: list[tuple[str, Sequence[tuple[bytes, bytes]]]]) -> None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for topic, records in batches:
                    self.conn.execute(
                        f"INSERT INTO {_table(topic)} (records, frames) VALUES (?, ?)",
                        (len(records), encode_frames(records)),
                    )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise


class EmbeddedProducer:
    def __init__(self, log: _Log, wake: asyncio.Event) -> None:
        self._log = log
        self._wake = wake
        self._pending: list[tuple[str, Sequence[tuple[bytes, bytes]], asyncio.Future[None]]] = []
        self._writing = False
        self._known: set[str] = set()

    async def send_batch(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        if not records:
            return
        if topic not in self._known:
            await asyncio.to_thread(self._log.ensure, topic)
            self._known.add(topic)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((topic, records, fut))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self._log.append, [(t, r) for t, r, _ in group])
                except sqlite3.Error as exc:
                    err = BusUnavailable(f"embedded log write failed: {exc}")
                    for _, _, fut in group:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for _, _, fut in group:
                    if not fut.done():
                        fut.set_result(None)
                self._wake.set()
        finally:
            self._writing = False


class EmbeddedConsumer:
    def __init__(self, log: _Log, topic: str, group: str, wake: asyncio.Event) -> None:
        self._log = log
        self._topic = topic
        self._group = group
        self._wake = wake
        self._conn = log.connect()
        self._lock = threading.Lock()
        log.ensure(topic)
        row = self._conn.execute(
            "SELECT next_offset FROM consumer_offsets WHERE grp = ? AND topic = ?", (group, topic)
        ).fetchone()
        self._committed = int(row[0]) if row else 1
        self._position = self._committed

    def _read(self, max_records: int) -> tuple[list[Message], int]:
        """Whole rows from the position on, until ``max_records`` is reached (at least one row)."""
        out: list[Message] = []
        next_row = self._position
        with self._lock:
            cursor = self._conn.execute(
                f"SELECT offset, records, frames FROM {_table(self._topic)} WHERE offset >= ? ORDER BY offset",
                (self._position,),
            )
            for row, _count, frames in cursor:
                base = int(row) << _ROW_SHIFT
                out += [Message(self._topic, 0, base | i, k, v) for i, (k, v) in enumerate(decode_frames(frames))]
                next_row = int(row) + 1
                if len(out) >= max_records:
                    break
            cursor.close()
        return out, next_row

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._wake.clear()
            try:
                messages, next_row = await asyncio.to_thread(self._read, max_records)
            except sqlite3.OperationalError as exc:  # locked, I/O: retry; a damaged row is not (health)
                raise BusUnavailable(f"embedded log read failed: {exc}") from exc
            if messages:
                self._position = next_row
                return messages
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:  # woken by an in-process producer, or re-check for other writers
                await asyncio.wait_for(self._wake.wait(), timeout=min(remaining, 0.25))
            except TimeoutError:
                pass

    def _commit(self, offset: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO consumer_offsets (grp, topic, next_offset) VALUES (?, ?, ?)"
                " ON CONFLICT (grp, topic) DO UPDATE SET next_offset = excluded.next_offset",
                (self._group, self._topic, offset),
            )

    async def commit(self) -> None:
        await self.commit_upto(self._position)

    def position(self) -> int:
        """Where the next poll starts: commit_upto(this) later marks everything polled so far."""
        return self._position

    async def commit_upto(self, position: object) -> None:
        """Commit up to a position taken earlier, while later polls are still being processed."""
        assert isinstance(position, int)
        if position > self._committed:
            try:
                await asyncio.to_thread(self._commit, position)
            except sqlite3.OperationalError as exc:
                raise BusUnavailable(f"embedded log commit failed: {exc}") from exc
            self._committed = position

    def on_revoke(self, callback: RevokeCallback) -> None:
        """One consumer owns the embedded log's only partition: nothing is ever revoked."""

    def lag(self) -> int:
        with self._lock:
            row = self._conn.execute(
                f"SELECT sum(records) FROM {_table(self._topic)} WHERE offset >= ?", (self._position,)
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def close(self) -> None:
        with self._lock:
            self._conn.close()


class EmbeddedBus:
    """EventBus on one SQLite file (``<data-dir>/log/events.sqlite3``)."""

    def __init__(self, path: Path, durable_fsync: bool = False) -> None:
        self._path = path
        self._durable = durable_fsync
        self._log: _Log | None = None
        self._wake: asyncio.Event | None = None
        self._producer: EmbeddedProducer | None = None

    async def start(self) -> None:
        self._log = await asyncio.to_thread(_Log, self._path, self._durable)
        self._wake = asyncio.Event()

    async def stop(self) -> None:
        if self._log is not None:
            with self._log.lock:
                self._log.conn.close()
            self._log = None

    def wake(self) -> None:
        """Another process appended to the log: let this process's consumers poll now rather than at
        their next 0.25 s check (a no-op before start)."""
        if self._wake is not None:
            self._wake.set()

    def _started(self) -> tuple[_Log, asyncio.Event]:
        if self._log is None or self._wake is None:
            raise BusUnavailable("embedded bus not started")
        return self._log, self._wake

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        log, _ = self._started()
        for topic in topics:
            await asyncio.to_thread(log.ensure, topic)

    def producer(self) -> EmbeddedProducer:
        log, wake = self._started()
        if self._producer is None:
            self._producer = EmbeddedProducer(log, wake)
        return self._producer

    def consumer(self, topic: str, group: str) -> EmbeddedConsumer:
        log, wake = self._started()
        return EmbeddedConsumer(log, topic, group, wake)

    def truncate_consumed(self, topic: str, groups: Sequence[str]) -> int:
        """Delete records every listed group has committed past; keeps the log file bounded."""
        log, _ = self._started()
        with log.lock:
            marks = [
                log.conn.execute(
                    "SELECT next_offset FROM consumer_offsets WHERE grp = ? AND topic = ?", (g, topic)
                ).fetchone()
                for g in groups
            ]
            if not marks or any(m is None for m in marks):
                return 0
            low = min(int(m[0]) for m in marks if m is not None)
            cur = log.conn.execute(f"DELETE FROM {_table(topic)} WHERE offset < ?", (low,))
            return cur.rowcount

    def rewrite(self, topic: str, change: Callable[[bytes], bytes | None]) -> int:
        """Pass every stored record of ``topic`` through ``change`` (the new value, or None to drop
        it) and rewrite the rows it changed, in one transaction; returns the records changed or
        dropped. Offsets stay as they are (a row left empty is deleted), so consumers carry on
        where they were. Used to erase a contact's records (journey_builder.privacy)."""
        log, _ = self._started()
        table = _table(topic)
        changed = 0
        with log.lock:
            log.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (offset INTEGER PRIMARY KEY AUTOINCREMENT,"
                " records INTEGER, frames BLOB)"
            )
            # what is removed must not stay readable in free pages or in the WAL: freed content is
            # zeroed, and the WAL is checkpointed and truncated afterwards
            log.conn.execute("PRAGMA secure_delete = ON")
            log.conn.execute("BEGIN IMMEDIATE")
            try:
                rows = log.conn.execute(f"SELECT offset, frames FROM {table} ORDER BY offset").fetchall()
                for offset, frames in rows:
                    kept: list[tuple[bytes, bytes]] = []
                    n = 0
                    for key, value in decode_frames(frames):
                        new = change(value)
                        n += new != value
                        if new is not None:
                            kept.append((key, new))
                    if not n:
                        continue
                    changed += n
                    if kept:
                        log.conn.execute(
                            f"UPDATE {table} SET records = ?, frames = ? WHERE offset = ?",
                            (len(kept), encode_frames(kept), offset),
                        )
                    else:
                        log.conn.execute(f"DELETE FROM {table} WHERE offset = ?", (offset,))
                log.conn.execute("COMMIT")
            except BaseException:
                log.conn.execute("ROLLBACK")
                raise
            if changed:
                log.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed
