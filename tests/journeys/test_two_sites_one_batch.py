"""One builder batch holding two sites' events with the same userId: each site gets its own
contact (a contact's key is its site and id; keyed by id alone, one site's row was lost)."""

from __future__ import annotations

from tests.journeys.conftest import Journey
from trailmark.storage.base import Storage


def test_the_same_contact_id_on_two_sites_in_one_batch(storage: Storage) -> None:
    j = Journey(storage)
    alpha = j.enrich([j.event("identify", "a-1", 0, user_id="u-ann", traits={"email": "ann@alpha.example"})])
    beta = j.enrich([j.event("identify", "b-1", 1, user_id="u-ann", traits={"email": "ann@beta.example"})])
    for ev in beta:
        ev["site_id"] = "s2"
    j.builder.process(alpha + beta)
    rows = j.sql("SELECT site_id, contact_id, email FROM {db}.contacts ORDER BY site_id")
    assert rows == [
        {"site_id": "s1", "contact_id": "user:u-ann", "email": "ann@alpha.example"},
        {"site_id": "s2", "contact_id": "user:u-ann", "email": "ann@beta.example"},
    ]
