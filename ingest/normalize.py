"""Turn one validated client event into a RawEvent: stamp, correct clock skew, pick ids.

This is the only place an incoming event is validated (pydantic-core via INCOMING_EVENT); every
later stage trusts the RawEvent shape.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas import INCOMING_EVENT, SCHEMA_VERSION, RawEvent


class EventRejected(ValueError):
    """One event of a batch is invalid; the others are still accepted."""


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def normalize(
    event: Any,
    *,
    site_id: str,
    received_at: datetime,
    batch_sent_at: datetime | None,
    ip: str,
    user_agent: str,
    max_skew_s: float,
) -> RawEvent:
    """Raise EventRejected with a one-line reason, or return the RawEvent to publish."""
    if not isinstance(event, dict):
        raise EventRejected("event must be a JSON object")
    try:
        ev = INCOMING_EVENT.validate_python(event)
    except ValidationError as exc:
        raise EventRejected(_describe(exc)) from None
    kind = ev["type"]
    user_id = ev.get("userId")
    user_id = "" if user_id is None else str(user_id)
    anonymous_id = ev.get("anonymousId") or ""
    if not anonymous_id and not user_id:
        raise EventRejected("anonymousId or userId is required")
    name = ev.get("event") if kind == "track" else ev.get("name")
    if kind == "track" and not name:
        raise EventRejected("event: a track call needs an event name")
    if kind == "alias" and not ev.get("previousId"):
        raise EventRejected("previousId: an alias call needs previousId")
    context = ev.get("context") or {}

    original = ev.get("timestamp")
    sent_at = ev.get("sentAt") or batch_sent_at
    timestamp = received_at
    if original is not None:
        original = _utc(original)
        timestamp = original
        if sent_at is not None:
            # Segment's rule: trust the client's intervals, not its clock.
            skew = (received_at - _utc(sent_at)).total_seconds()
            if abs(skew) <= max_skew_s:
                timestamp = original + (received_at - _utc(sent_at))
    ctx_ip = context.get("ip")
    ctx_ua = context.get("userAgent")
    return {
        "v": SCHEMA_VERSION,
        "site_id": site_id,
        "message_id": ev.get("messageId") or str(uuid.uuid4()),
        "type": kind,
        "anonymous_id": anonymous_id,
        "user_id": user_id,
        "previous_id": ev.get("previousId") or "",
        "group_id": ev.get("groupId") or "",
        "event": name or "",
        "properties": ev.get("properties") or {},
        "traits": ev.get("traits") or context.get("traits") or {},
        "context": context,
        "timestamp": iso(timestamp),
        "original_timestamp": iso(original) if original is not None else "",
        "sent_at": iso(sent_at) if sent_at is not None else "",
        "received_at": iso(received_at),
        "ip": ctx_ip if isinstance(ctx_ip, str) and ctx_ip else ip,
        "user_agent": ctx_ua if isinstance(ctx_ua, str) and ctx_ua else user_agent,
    }
