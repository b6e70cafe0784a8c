"""The collector's one validation of each event: the schema (pydantic-core) plus the rules a
schema cannot say (an id is required, a track call needs a name, timestamps must be ISO-8601)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError


class EventRejected(ValueError):
    """One event of a batch is invalid; the others are still accepted."""


def describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def describe_exc(exc: ValidationError) -> str:
    return describe(exc.errors(include_url=False))


def _iso_ok(value: Any) -> bool:
    if not value:
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def check_event(ev: dict[str, Any]) -> str | None:
    """The reason a schema-valid event is still unusable, or None."""
    if not ev.get("anonymousId") and ev.get("userId") in (None, ""):
        return "anonymousId or userId is required"
    kind = ev["type"]
    if kind == "track" and not ev.get("event"):
        return "event: a track call needs an event name"
    if kind == "alias" and not ev.get("previousId"):
        return "previousId: an alias call needs previousId"
    if not _iso_ok(ev.get("timestamp")):
        return f"timestamp: not an ISO-8601 timestamp: {str(ev.get('timestamp'))[:40]!r}"
    if not _iso_ok(ev.get("sentAt")):
        return "sentAt: not an ISO-8601 timestamp"
    return None


def visitor(ev: dict[str, Any]) -> str:
    """The partitioning key part: one visitor's events stay in order."""
    return str(ev.get("anonymousId") or ev.get("userId") or "")
