"""The enricher drops events of erased identifiers (``Drop("erased")``, counted by the runner), so they
never reach the enriched topic, a dead letter or the builder; real enrichment stage, real storage."""

from __future__ import annotations

from typing import Any

import orjson

from tests.journeys.conftest import T0, Journey
from tests.privacy.test_core import erase, stitched_jane_and_bob
from trailmark.bus.base import Message
from trailmark.results import Drop
from trailmark.runtime import EnrichStage
from trailmark.settings import Settings


def raw_record(events: list[dict[str, Any]]) -> Message:
    batch = {"v": 1, "site_id": "s1", "received_at": T0.isoformat(), "ip": "81.2.69.142", "body": {"batch": events}}
    return Message("trailmark.raw", 0, 0, b"s1:x", orjson.dumps(batch))


def test_the_enricher_drops_events_of_erased_identifiers(journey: Journey) -> None:
    stitched_jane_and_bob(journey)
    e = journey.event
    late = [
        e("page", "jane-phone", 30),  # an erased device
        e("identify", "new-device", 31, user_id="u-jane"),  # an erased user id on a new device
        e("identify", "other-device", 32, traits={"email": "JANE@acme.io"}),  # an erased email (the enricher finds it)
        e("page", "bob-1", 33),  # not erased
    ]
    stage = EnrichStage(Settings(), {}, journey.storage)
    before = stage.process([raw_record(late)])
    assert len(before.ok) == 4 and before.dropped == []  # nothing erased yet: every event goes on

    erase(journey.storage, "u-jane")
    after = stage.process([raw_record(late)])
    assert [o.value["anonymous_id"] for o in after.ok] == ["bob-1"]
    assert after.dropped == [Drop("erased")] * 3 and after.failed == []

    # without a storage (an enricher-only process on Kafka) nothing is dropped: the builder still is
    assert len(EnrichStage(Settings(), {}).process([raw_record(late)]).ok) == 4
