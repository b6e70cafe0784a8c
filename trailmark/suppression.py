"""The suppression list: hashes of erased identifiers, read by every stage that sees events.

An erasure (journey_builder/privacy.py) stores ``identifier_hash(site, identifier)`` of each of the
contact's identifiers in ``suppressed_identifiers`` before it deletes anything; a stage that meets an
event carrying one drops it, so late, retried or replayed events cannot bring the contact back. The
enricher checks it (the event then never reaches the enriched topic, a dead letter or the builder),
and the journey builder checks it again for what was already past the enricher when the erasure began.

It lives here, in the platform, because two stages read it and stages never import each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from trailmark.storage.base import Storage

__all__ = ["Suppression", "event_identifiers", "identifier_hash"]


def identifier_hash(site_id: str, identifier: str) -> str:
    """The hex SHA-256 an erased identifier is remembered by (``anon:ID``, ``user:ID``, ``email:addr``)."""
    return hashlib.sha256(f"{site_id}\x00{identifier}".encode("utf-8", "surrogatepass")).hexdigest()


def event_identifiers(event: dict[str, Any]) -> list[str]:
    """The typed identifiers of one enriched event (what the suppression list is checked for)."""
    anon = event.get("anonymous_id") or ""
    user = event.get("user_id") or ""
    out = [f"anon:{anon or 'user:' + str(user)}"]
    if user:
        out.append(f"user:{user}")
    if event.get("email") and event.get("type") != "group":  # a group call's email is the account's
        out.append(f"email:{str(event['email']).lower()}")
    if event.get("previous_id"):
        out.append(f"anon:{event['previous_id']}")
    return out


class Suppression:
    """Which events of a batch carry an erased identifier: one lookup per batch by hash."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.entries = -1  # rows of suppressed_identifiers last seen: a change means a new erasure

    def changed(self) -> bool:
        """Whether an erasure happened since the last call (cached contact state must then go).
        Also refreshes what :meth:`erased` knows: call it once per batch."""
        rows = self.storage.query(f"SELECT count() AS n FROM {self.storage.database}.suppressed_identifiers")
        n = int(rows[0]["n"]) if rows else 0
        before, self.entries = self.entries, n
        return before != -1 and n != before

    def erased(self, events: Sequence[dict[str, Any]]) -> list[bool]:
        """For each event: does it carry an erased identifier of its site? (Plain dicts: a caller with
        typed events says so at the call, as the journey builder does.)"""
        if self.entries == 0:  # nothing was ever erased: no hashing, no lookup (the common case)
            return [False] * len(events)
        hashes = [[identifier_hash(str(e.get("site_id", "")), i) for i in event_identifiers(e)] for e in events]
        wanted = sorted({(str(e.get("site_id", "")), h) for e, hs in zip(events, hashes, strict=True) for h in hs})
        if not wanted:
            return [False] * len(events)
        found = {
            (r["site_id"], r["hash"])
            for r in self.storage.query(
                f"SELECT DISTINCT site_id, hash FROM {self.storage.database}.suppressed_identifiers"
                " WHERE (site_id, hash) IN {v:Array(Tuple(String, String))}",
                {"v": wanted},
            )
        }
        return [any((str(e.get("site_id", "")), h) in found for h in hs) for e, hs in zip(events, hashes, strict=True)]
