"""shared_devices (migration 031): the devices whose contact has or had other devices, with every
link of each, kept by the journey builder as it links devices. The funnel, attribution and the
insights read it instead of finding those devices in every read, so it must hold what that
computation gives: here, after every batch of a random stream of identifies, aliases and email
merges (two builders sharing the devices, as two partitions do, and restarts that empty their
memory), and after an upgrade's backfill."""

from __future__ import annotations

import random
from typing import Any

import pytest

from journey_builder.builder import JourneyBuilder
from tests.journeys.conftest import Journey
from trailmark.settings import JourneySettings
from trailmark.storage.base import migrations, split_statements

# what the reads computed in every read before migration 031 (analytics._shared_hashes and
# _shared_map at 2026-12-06): the devices of every contact linked to two or more, each with the
# contact of its latest link
COMPUTED = (
    "SELECT anonymous_id, argMax(contact_id, last_seen) AS contact FROM {db}.identities_data"
    " WHERE anonymous_id IN (SELECT anonymous_id FROM {db}.contact_devices WHERE contact_id IN"
    " (SELECT contact_id FROM {db}.contact_devices GROUP BY contact_id HAVING uniqExact(anonymous_id) > 1))"
    " GROUP BY anonymous_id"
)
KEPT = "SELECT anonymous_id, argMax(contact_id, last_seen) AS contact FROM {db}.shared_devices GROUP BY anonymous_id"


def _map(journey: Journey, sql: str) -> dict[str, str]:
    return {r["anonymous_id"]: r["contact"] for r in journey.sql(sql)}


def _identify(journey: Journey, rng: random.Random, device: str, minute: float) -> dict[str, Any]:
    e = journey.event
    roll = rng.random()
    user = f"u{rng.randrange(6)}"
    email = f"p{rng.randrange(6)}@example.com"
    if roll < 0.35:
        return e("identify", device, minute, user_id=user)
    if roll < 0.6:
        return e("identify", device, minute, traits={"email": email})  # an email-only contact, or a merge
    if roll < 0.8:
        return e("identify", device, minute, user_id=user, traits={"email": email})
    if roll < 0.9:
        return {**e("alias", device, minute, user_id=user), "previousId": f"d{rng.randrange(14)}"}
    return e("page", device, minute, path="/")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_kept_devices_are_those_the_reads_computed_after_every_batch(journey: Journey, seed: int) -> None:
    rng = random.Random(seed)
    settings = JourneySettings()
    builders = [JourneyBuilder(journey.storage, settings) for _ in range(2)]  # two partitions' builders
    minute = 0.0
    shared_seen = 0
    for batch in range(12):
        if batch in (4, 8):  # a restart: the builders meet the devices' contacts as stored
            builders = [JourneyBuilder(journey.storage, settings) for _ in range(2)]
        events: list[list[dict[str, Any]]] = [[], []]
        for _ in range(rng.randrange(1, 7)):
            n = rng.randrange(14)
            minute += rng.random() * 30
            events[n % 2].append(_identify(journey, rng, f"d{n}", minute))
        for builder, evs in zip(builders, events, strict=True):
            if evs:
                builder.process(journey.enrich(evs))
        kept, computed = _map(journey, KEPT), _map(journey, COMPUTED)
        assert kept == computed, f"batch {batch}"
        shared_seen = max(shared_seen, len(kept))
    assert shared_seen >= 3  # the stream did make contacts of several devices


def test_a_device_moving_to_a_contact_of_its_own_is_read_as_that_contact(journey: Journey) -> None:
    e = journey.event
    journey.send(e("identify", "laptop", 0, user_id="ann"), e("identify", "phone", 1, user_id="ann"))
    assert _map(journey, KEPT) == {"laptop": "user:ann", "phone": "user:ann"}
    # the phone is handed to Bob: a contact of one device, but the phone stays among the kept devices
    journey.send(e("identify", "phone", 60, user_id="bob"))
    assert _map(journey, KEPT) == _map(journey, COMPUTED) == {"laptop": "user:ann", "phone": "user:bob"}
    # and back to Ann, on a builder that has never seen the phone (its contact known from storage)
    JourneyBuilder(journey.storage, JourneySettings()).process(
        journey.enrich([e("identify", "phone", 120, user_id="ann")])
    )
    assert _map(journey, KEPT) == {"laptop": "user:ann", "phone": "user:ann"}


def test_the_backfill_of_an_upgraded_install_keeps_the_same_devices(journey: Journey) -> None:
    e = journey.event
    journey.send(
        e("identify", "a1", 0, traits={"email": "x@example.com"}),
        e("identify", "a2", 1, traits={"email": "x@example.com"}),
        e("identify", "a3", 2, user_id="solo"),
    )
    journey.send(e("identify", "a2", 5, user_id="x", traits={"email": "x@example.com"}))  # a merge into user:x
    kept = _map(journey, KEPT)
    assert set(kept) == {"a1", "a2"} and set(kept.values()) == {"user:x"}
    journey.sql("TRUNCATE TABLE {db}.shared_devices")
    (backfill,) = [
        s
        for name, sql in migrations()
        if name.startswith("031_")
        for s in split_statements(sql, "{db}")
        if "INSERT" in s
    ]
    for _ in range(2):  # a migration statement may run again
        journey.storage.execute(backfill.replace("{db}", journey.storage.database))
        assert _map(journey, KEPT) == kept


class _Killed(Exception):
    pass


@pytest.mark.parametrize("restart", [False, True], ids=["retried", "restarted"])
def test_a_batch_cut_short_after_its_identities_is_shared_when_it_comes_again(journey: Journey, restart: bool) -> None:
    e = journey.event
    journey.send(e("identify", "laptop", 0, user_id="ann"))
    batch = journey.enrich([e("identify", "phone", 5, user_id="ann")])  # Ann's second device
    builder = journey.builder
    real = builder.repo.share_devices

    def killed(*args: Any) -> None:
        raise _Killed  # the identities are stored, shared_devices is not written

    builder.repo.share_devices = killed  # type: ignore[method-assign]
    with pytest.raises(_Killed):
        builder.process(batch)
    assert _map(journey, KEPT) == {} and set(_map(journey, COMPUTED)) == {"laptop", "phone"}
    builder.repo.share_devices = real  # type: ignore[method-assign]
    if restart:  # a successor: it meets the phone's contact as stored, already Ann
        builder = JourneyBuilder(journey.storage, JourneySettings())
    builder.process(batch)
    assert _map(journey, KEPT) == _map(journey, COMPUTED) == {"laptop": "user:ann", "phone": "user:ann"}
