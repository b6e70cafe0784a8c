"""Errors the enrich stage raises to its runner."""

from __future__ import annotations

from trailmark.errors import Rejected


class PoisonEvent(Rejected):
    """The record cannot be enriched at all (not an object, no site_id): the runner dead-letters it.

    Anything less severe is recorded in ``enrich_errors`` instead, so the event still flows.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
