"""What a stage returns for each record, and the dead-letter records the runner makes of failures.

A stage is a function from a batch of records to results, one per record it read or event it
found in them:

- ``Ok(key, value)``: the output, forwarded by the runner (to the next topic, or in memory);
- ``Failed(key, kind, reason, payload)``: the record cannot be processed; the runner turns it into
  a dead letter (stage, kind, reason, raw payload, site, time, version) and the stream goes on;
- ``Drop(reason)``: deliberately not processed (counted by reason in /metrics, never stored).

Building a dead letter cannot fail, whatever the payload: one that cannot be JSON is kept as its
bounded repr, a reason is made valid UTF-8, and the sink falls back to a minimal row.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import orjson

from schemas import SCHEMA_VERSION, DeadLetter
from schemas.times import ch_now

T = TypeVar("T")
DeadLetterKind = Literal["unreadable", "invalid", "enrich_failed", "unserializable", "build_failed", "unknown"]


@dataclass(slots=True)
class Ok(Generic[T]):
    """A record's (or one of its events') value a stage made, under the record's bus key. Not
    frozen, unlike the others: one is made per event a Kafka journey builder reads (20k a batch),
    and a frozen dataclass's ``__init__`` costs 0.30 against 0.12 us. Nothing changes one."""

    key: bytes
    value: T
    # what the value was read from, for a writer that can store it as it came (the Kafka journey
    # builder's events: trailmark.compiled.RecordTexts, one for the events of one read); None: nothing
    source: object = None


@dataclass(frozen=True, slots=True)
class Failed:
    key: bytes
    kind: DeadLetterKind
    reason: str
    payload: object  # the record's bytes as they arrived, or the object that failed

    def site_id(self) -> str:
        """The failed record's site: from the object when it names one, else from its bus key
        (``site:visitor``)."""
        if isinstance(self.payload, dict) and isinstance(self.payload.get("site_id"), str):
            return str(self.payload["site_id"])
        site, sep, _ = self.key.partition(b":")
        return site.decode("utf-8", "replace") if sep else ""

    def record(self, stage: str) -> bytes:
        return dead_letter(stage, self.reason, self.payload, self.kind, self.site_id())


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


Result = Ok[T] | Failed | Drop


MAX_DEAD_LETTER_PAYLOAD = 1024 * 1024  # bytes kept of a failed record; Kafka's default record limit is 1 MiB
MAX_REASON = 2000


def _valid_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates (from JSON escapes) become visible ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _payload_bytes(payload: object) -> tuple[bytes, str]:
    """A failed record's bytes, and a note for the reason when they are not its JSON.

    The JSON when it can be written; otherwise (nested deeper than orjson's 255 levels, lone
    surrogates, integers over 64 bits) the Python repr, which shows the same content."""
    if isinstance(payload, bytes):
        return payload, ""
    try:
        return orjson.dumps(payload), ""
    except (TypeError, ValueError) as exc:
        note = f"payload kept as Python repr, not JSON ({exc})"
    try:
        text = repr(payload)
    except (RecursionError, ValueError, TypeError, MemoryError):
        return f"<a {type(payload).__name__} that cannot be shown>".encode(), "payload cannot be shown"
    return _valid_text(text[:MAX_DEAD_LETTER_PAYLOAD]).encode(), note


def dead_letter(stage: str, reason: str, payload: object, kind: DeadLetterKind = "unknown", site_id: str = "") -> bytes:
    """A dead-letter record for a failed record; never raises, whatever ``reason`` and ``payload``.

    ``payload`` is the record as it arrived (bytes: kept as UTF-8 text, else base64) or the object
    that failed (kept as JSON, else as its repr). At most MAX_DEAD_LETTER_PAYLOAD bytes are kept;
    the reason says when the payload was cut or is not the original JSON."""
    data, note = _payload_bytes(payload)
    notes = [note] if note else []
    if len(data) > MAX_DEAD_LETTER_PAYLOAD:
        notes.append(f"payload cut from {len(data)} to {MAX_DEAD_LETTER_PAYLOAD} bytes")
        data = data[:MAX_DEAD_LETTER_PAYLOAD]
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(data).decode(), "base64"
    full = _valid_text(reason)[:MAX_REASON] + "".join(f" [{n}]" for n in notes)
    record: DeadLetter = {
        "stage": _valid_text(stage),
        "reason": full or "unknown",
        "payload": text,
        "payload_encoding": encoding,  # type: ignore[typeddict-item]
        "failed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "version": SCHEMA_VERSION,
        "kind": kind,
        "site_id": _valid_text(site_id)[:200],
    }
    return orjson.dumps(record)


def describe(exc: BaseException) -> str:
    """``Type: message`` for a reason; a message that itself fails to format is not fatal."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails (from hostile input) still has a type
        return type(exc).__name__


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _payload_bytes(value)[0].decode("utf-8", "replace")


def dead_letter_row(value: bytes) -> dict[str, Any]:
    """The ``dead_letters`` row of one record of the dead-letter topic, whatever it holds.

    Fields of the wrong type are coerced (text as JSON, a version out of UInt32 as 0, a time that
    is not text as now); a record that is not a JSON object (another producer's, a damaged one)
    is kept whole as the payload of a row of stage ``unknown``. ClickHouse may still refuse a
    value (a time it cannot parse): the sink (runtime.DeadLetterStore) then falls back to a minimal row."""
    try:
        rec = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        rec = orjson.loads(dead_letter("unknown", f"unreadable dead letter: not JSON: {exc}", value))
    if not isinstance(rec, dict):
        rec = orjson.loads(dead_letter("unknown", f"unreadable dead letter: a JSON {type(rec).__name__}", value))
    failed_at, version = rec.get("failed_at"), rec.get("version")
    return {
        "stage": _as_text(rec.get("stage")) or "unknown",
        "reason": _as_text(rec.get("reason")),
        "payload": _as_text(rec.get("payload")),
        "payload_encoding": _as_text(rec.get("payload_encoding")),
        "failed_at": failed_at[:23].replace("T", " ") if isinstance(failed_at, str) else ch_now(),
        "version": version if isinstance(version, int) and 0 <= version < 2**32 else 0,
        "kind": _as_text(rec.get("kind")) or "unknown",
        "site_id": _as_text(rec.get("site_id"))[:200],
    }


def _ascii(text: str, limit: int) -> str:
    return text[:limit].encode("ascii", "backslashreplace").decode("ascii")


def minimal_row(row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """What is stored of a dead letter ClickHouse refused: plain ASCII, a valid time, and the
    refused row itself as the payload (JSON, base64), so nothing of it is lost."""
    original = _payload_bytes(row)[0]
    return {
        "stage": _ascii(str(row.get("stage", "unknown")), 100),
        "reason": f"stored as a minimal row, storage refused the dead letter ({_ascii(describe(exc), 500)});"
        f" payload: the refused row as JSON; its reason: {_ascii(str(row.get('reason', '')), 1000)}",
        "payload": base64.b64encode(original[:MAX_DEAD_LETTER_PAYLOAD]).decode(),
        "payload_encoding": "base64",
        "failed_at": ch_now(),
        "version": SCHEMA_VERSION,
        "kind": "unknown",
        "site_id": _ascii(str(row.get("site_id", "")), 200),
    }
