"""What the collector publishes: one RawBatch per visitor per request, unfolded into RawEvents by
the enrichment stage.

Why a batch and not one record per event: the collector validates a whole request body in one
pydantic-core call (JSON parsing and validation in Rust) and, when the body is valid and holds one
visitor's events (every browser batch does), forwards the client's bytes unchanged inside the
record. No per-event Python object is built or dumped at the edge, which is what lets one core take
well over 100k events/s. Server facts (site, receivedAt, IP, user agent) are stamped once per batch;
clock-skew correction and the mapping to snake_case RawEvent fields happen in ``unfold``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired

from pydantic import ConfigDict, TypeAdapter
from typing_extensions import TypedDict

from schemas.events import SCHEMA_VERSION, IncomingEvent, RawEvent
from schemas.times import bus_time, parse_time

MAX_SKEW = timedelta(days=7)


class IncomingBatch(TypedDict):
    """``POST /v1/batch`` body, as Segment's HTTP tracking API defines it."""

    __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]

    batch: list[IncomingEvent]
    sentAt: NotRequired[str | None]
    writeKey: NotRequired[str | None]


INCOMING_BATCH = TypeAdapter(IncomingBatch)


class RawBatch(TypedDict):
    """The record value on the raw topic. ``body`` is an IncomingBatch (validated at the edge)."""

    v: int
    site_id: str
    received_at: str  # RFC 3339 UTC
    ip: str
    user_agent: str
    body: dict[str, Any]


def unfold(
    raw: RawBatch,
    max_skew: timedelta = MAX_SKEW,
    on_error: Callable[[object, Exception], None] | None = None,
) -> list[RawEvent]:
    """The RawEvents of one batch, with Segment's clock-skew rule applied:
    ``timestamp = receivedAt - (sentAt - timestamp)`` (skews above ``max_skew`` are not corrected),
    where the client's time is ``timestamp`` or, without one, ``originalTimestamp``. A timestamp that
    ends up more than ``max_skew`` after receivedAt (year 9999, a broken clock) is receivedAt: it would
    pin the contact to the top of every time-ordered list.

    With ``on_error``, an item that cannot be unfolded (not an object, no type: a record no collector
    of ours wrote) is handed to it with the error and the other items still come out; without, the
    error is raised."""
    received = parse_time(raw["received_at"]) or datetime.now(UTC)
    body = raw["body"]
    batch_sent = parse_time(body.get("sentAt"))
    out: list[RawEvent] = []
    for ev in body.get("batch") or ():
        try:
            out.append(_unfold_one(raw, ev, received, batch_sent, max_skew))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if on_error is None:
                raise
            on_error(ev, exc)
    return out


def _unfold_one(
    raw: RawBatch, ev: Any, received: datetime, batch_sent: datetime | None, max_skew: timedelta
) -> RawEvent:
    sent = parse_time(ev.get("sentAt")) or batch_sent
    # the client's own time: ``timestamp``, else ``originalTimestamp`` (RudderStack's SDKs and
    # Segment's mobile ones send only that); both get the same sentAt skew correction
    original = parse_time(ev.get("timestamp")) or parse_time(ev.get("originalTimestamp"))
    timestamp = original or received
    if original is not None and sent is not None and abs(received - sent) <= max_skew:
        try:
            timestamp = original + (received - sent)
        except OverflowError:  # a client time at the very end (or start) of the calendar
            timestamp = received
    if timestamp - received > max_skew:  # further ahead than any clock skew: not when it happened
        timestamp = received
    kind = ev["type"]
    user_id = ev.get("userId")
    context = ev.get("context") or {}
    ctx_ip, ctx_ua = context.get("ip"), context.get("userAgent")
    return {
        "v": SCHEMA_VERSION,
        "site_id": raw["site_id"],
        "message_id": ev.get("messageId") or str(uuid.uuid4()),
        "type": kind,
        "anonymous_id": ev.get("anonymousId") or "",
        "user_id": "" if user_id is None else str(user_id),
        "previous_id": ev.get("previousId") or "",
        "group_id": ev.get("groupId") or "",
        "event": (ev.get("event") if kind == "track" else ev.get("name")) or "",
        "properties": ev.get("properties") or {},
        "traits": ev.get("traits") or context.get("traits") or {},
        "context": context,
        "timestamp": bus_time(timestamp),
        "original_timestamp": bus_time(original) if original else "",
        "sent_at": bus_time(sent) if sent else "",
        "received_at": bus_time(received),
        "ip": ctx_ip if isinstance(ctx_ip, str) and ctx_ip else raw["ip"],
        "user_agent": ctx_ua if isinstance(ctx_ua, str) and ctx_ua else raw["user_agent"],
        # the one mapped field a kind does not use (a track call's ``name``, another call's ``event``) too
        "extra": {k: v for k, v in ev.items() if k not in _MAPPED or k == ("name" if kind == "track" else "event")},
    }


# top-level event fields that have a RawEvent field of their own (or, the write key, must not be
# stored); every other one (integrations, channel, category, _metadata, unknown) goes to ``extra``
_MAPPED = frozenset(
    {
        "type",
        "messageId",
        "anonymousId",
        "userId",
        "previousId",
        "groupId",
        "event",
        "name",
        "properties",
        "traits",
        "context",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "writeKey",
    }
)
