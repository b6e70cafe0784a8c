"""Answers of the dearest reads, kept in ClickHouse for a while (``saved_answers``, migration 029).

A read whose answer changes slowly but costs seconds (``/v1/moments`` at 10M events) asks
:meth:`SavedAnswers.answer` with its parameters and how to compute it. The newest kept answer for
(site, read, parameters) is served while it is younger than ``max_age_s``; an older one is served
once more while this process computes it again in a background thread, so a reader waits for a
computation only the first time a question is asked (or with ``fresh``). Every reader process shares
the table, so a scale-out deployment computes a question about once per ``max_age_s``, not once per
process. ``max_age_s`` 0 turns this off: every read computes.

Bounded for a key holder who varies the parameters: a new question is computed in the request that
asks it (under the read's own limits, as before), and a process runs at most one background
computation at a time; a stale answer found while one runs is served and refreshed by a later read.
A failed background computation is logged and leaves the old answer in place.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.times import ch_text, from_ch
from trailmark.storage.base import QueryError, Storage

log = logging.getLogger("trailmark.reads")


def answer_key(params: Mapping[str, Any]) -> str:
    """SHA-256 of the parameters as canonical JSON (sorted keys): one key per question."""
    return hashlib.sha256(orjson.dumps(dict(params), option=orjson.OPT_SORT_KEYS)).hexdigest()


class SavedAnswers:
    """The kept answers of one read (``kind``), for every site; one per read router."""

    def __init__(self, kind: str, max_age_s: float, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.kind = kind
        self.max_age_s = max_age_s
        self._now = now
        self._refreshing = threading.Lock()  # held by the one background computation of this process
        self.refresher: threading.Thread | None = None  # the last one started (tests join it)

    def answer(
        self,
        storage: Storage,
        site_id: str,
        params: Mapping[str, Any],
        compute: Callable[[], Any],
        fresh: bool = False,
    ) -> tuple[Any, str]:
        """(value, computed_at as bus time) for ``params``: kept, or computed now by ``compute``
        (a JSON-able value) and kept."""
        if self.max_age_s <= 0:
            return compute(), from_ch(ch_text(self._now()))
        key = answer_key(params)
        kept = None if fresh else self._read(storage, site_id, key)
        if kept is None:
            return self._compute(storage, site_id, key, compute)
        value, at = kept
        if (self._now() - at).total_seconds() >= self.max_age_s and self._refreshing.acquire(blocking=False):
            self.refresher = threading.Thread(
                target=self._refresh, args=(storage, site_id, key, compute), name=f"saved-{self.kind}", daemon=True
            )
            self.refresher.start()
        return value, from_ch(ch_text(at))

    def _compute(self, storage: Storage, site_id: str, key: str, compute: Callable[[], Any]) -> tuple[Any, str]:
        began = self._now()
        value = compute()
        at = ch_text(began)
        text = orjson.dumps(value).decode()
        row = {"site_id": site_id, "kind": self.kind, "key": key, "computed_at": at, "value": text}
        try:
            storage.insert("saved_answers", [row])
        except QueryError as exc:  # the answer stands; the next read computes it again
            log.warning("could not keep a %s answer: %s", self.kind, exc)
        return value, from_ch(at)

    def _refresh(self, storage: Storage, site_id: str, key: str, compute: Callable[[], Any]) -> None:
        try:
            self._compute(storage, site_id, key, compute)
        except Exception as exc:  # noqa: BLE001 - a background thread: the old answer stays served
            log.warning("recomputing a kept %s answer failed: %s", self.kind, exc)
        finally:
            self._refreshing.release()

    def _read(self, storage: Storage, site_id: str, key: str) -> tuple[Any, datetime] | None:
        try:
            rows = storage.query(
                "SELECT value, toUnixTimestamp64Milli(computed_at) AS at_ms"
                f" FROM {storage.database}.saved_answers"
                " WHERE site_id = {s:String} AND kind = {k:String} AND key = {key:String}"
                " ORDER BY computed_at DESC LIMIT 1",
                {"s": site_id, "k": self.kind, "key": key},
                readonly=True,
            )
        except QueryError as exc:  # answered live instead
            log.warning("could not read the kept %s answers: %s", self.kind, exc)
            return None
        if not rows:
            return None
        return orjson.loads(rows[0]["value"]), datetime.fromtimestamp(int(rows[0]["at_ms"]) / 1000, UTC)
