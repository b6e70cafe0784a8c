"""Attribution counted by trailmark/native (src/attribution.rs) from the rows a query streams in the
Native format, against ClickHouse's count of the same rows (``analytics._per_conversion``), on chDB
and on a ClickHouse server (``storage``: the server's answers arrive in HTTP chunks)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from journey_builder import analytics
from journey_builder.attribution import MODELS
from trailmark import compiled
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

SITE = "s1"
T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
CONVERSION = "Order Completed"
CHANNELS = ["Organic Search", "Paid Search", "Email", "Referral", "Direct", ""]
CAMPAIGNS = ["spring", "brand", "", "retarget"]

pytestmark = pytest.mark.skipif(compiled.attribution_rows is None, reason="trailmark/native is not built (make native)")


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def touch(device: str, session: str, at: datetime, channel: str, campaign: str = "") -> dict[str, Any]:
    return {
        "site_id": SITE,
        "anonymous_id": device,
        "session_id": session,
        "timestamp": stamp(at),
        "channel": channel,
        "source": "",
        "medium": "",
        "campaign": campaign,
        "retention_days": 0,
    }


def conversion(device: str, at: datetime, message: str) -> dict[str, Any]:
    return {
        "site_id": SITE,
        "kind": "track",
        "step": CONVERSION,
        "anonymous_id": device,
        "timestamp": stamp(at),
        "message_id": message,
        "retention_days": 0,
    }


def link(device: str, contact: str, at: datetime) -> dict[str, Any]:
    return {"site_id": SITE, "anonymous_id": device, "contact_id": contact, "last_seen": stamp(at)}


def both(storage: Storage, model: str, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The native answer and ClickHouse's, checked equal: the same conversions and keys, the credits
    equal to their rounding (the sums of floats in another order)."""
    args = (storage, SITE, CONVERSION, model, kw.pop("by", "channel"), kw.pop("lookback", 30), kw.pop("half", 7.0))
    native = analytics.attribution(*args, **kw)
    saved = compiled.attribution_rows
    compiled.attribution_rows = None
    try:
        sql = analytics.attribution(*args, **kw)
    finally:
        compiled.attribution_rows = saved
    assert native["total_conversions"] == sql["total_conversions"], (model, kw)
    mine = {r["key"]: r["credit"] for r in native["rows"]}
    theirs = {r["key"]: r["credit"] for r in sql["rows"]}
    assert mine.keys() == theirs.keys(), (model, kw)
    assert mine == pytest.approx(theirs, abs=1e-5), (model, kw)
    return native, sql


Rows = list[dict[str, Any]]


def random_rows(seed: int, devices: int) -> tuple[Rows, Rows, Rows, Rows]:
    """Touches, conversions, shared devices' links, and rows to store again: a third of the devices
    share contacts (in threes, one of each three linked to a second contact later), some touches and
    conversions are stored twice, some touches of one contact start at the same ms in other
    sessions, and some conversions have no touch within a short lookback."""
    rng = random.Random(seed)
    touches: Rows = []
    conversions: Rows = []
    links: Rows = []
    again: Rows = []
    for d in range(devices):
        device = f"d{d}"
        if d < devices // 3:
            links.append(link(device, f"c{d // 3}", T0))
            if d % 3 == 0:
                links.append(link(device, f"c{d // 3 + 1}", T0 + timedelta(days=1)))
        at = T0 + timedelta(seconds=rng.randrange(40 * 86400), milliseconds=rng.randrange(1000))
        for s in range(rng.randrange(0, 7)):
            at += timedelta(seconds=rng.choice([5, 600, 7200, 86400, 5 * 86400, 20 * 86400]))
            row = touch(device, f"{device}-s{s}", at, rng.choice(CHANNELS), rng.choice(CAMPAIGNS))
            touches.append(row)
            if rng.random() < 0.1:
                again.append(dict(row))  # stored twice
            if d < devices // 3 and rng.random() < 0.2:  # another device of the contact, the same ms
                touches.append(touch(f"d{d - d % 3 + (d + 1) % 3}", f"{device}-t{s}", at, rng.choice(CHANNELS)))
        for c in range(rng.randrange(0, 4)):
            at += timedelta(seconds=rng.choice([1, 3600, 3 * 86400]))
            conversions.append(conversion(device, at, f"{device}-m{c}"))
            if rng.random() < 0.1:
                again.append(conversion(device, at, f"{device}-m{c}"))  # stored twice
    return touches, conversions, links, again


def fill(storage: Storage, seed: int, devices: int) -> None:
    """``random_rows`` stored; the rows stored twice are inserted again, apart (one insert would make
    them one row)."""
    touches, conversions, links, again = random_rows(seed, devices)
    storage.insert("session_touches", touches)
    storage.insert("step_events", conversions)
    storage.insert("shared_devices", links)
    storage.insert("session_touches", [r for r in again if "session_id" in r])
    storage.insert("step_events", [r for r in again if "step" in r])


def test_credits_equal_the_clickhouse_count_on_random_rows(storage: Storage) -> None:
    fill(storage, 5, 600)
    for model in MODELS:
        native, _ = both(storage, model)
        assert native["total_conversions"] > 300 and len(native["rows"]) >= 4, model
        both(storage, model, by="campaign")
        both(storage, model, lookback=1, half=0.5)
        both(storage, model, since="2026-10-20T00:00:00Z", until="2026-11-10T00:00:00Z")
    ranged, _ = both(storage, "linear", since="2026-10-20T00:00:00Z", until="2026-11-10T00:00:00Z")
    whole, _ = both(storage, "linear")
    assert 0 < ranged["total_conversions"] < whole["total_conversions"]


def test_many_rows_in_every_bucket_credit_the_same(storage: Storage) -> None:
    """150k touches and 40k conversions of 50k devices, generated in SQL: every one of the module's
    256 buckets holds hundreds of groups, and the rows arrive in several blocks."""
    db = storage.database
    channels = ", ".join(f"'{c}'" for c in CHANNELS)
    storage.execute(
        f"INSERT INTO {db}.session_touches (site_id, anonymous_id, session_id, timestamp, channel, source, medium,"
        " campaign, retention_days)"
        f" SELECT '{SITE}', concat('d', toString(number % 50000)), concat('s', toString(number)),"
        " toDateTime64('2026-10-01 09:00:00', 3, 'UTC') + toIntervalMillisecond(cityHash64(number) % 5000000000),"
        f" [{channels}][cityHash64(number, 1) % 6 + 1], '', '', '', 0 FROM numbers(150000)"
    )
    storage.execute(
        f"INSERT INTO {db}.step_events (site_id, kind, step, anonymous_id, timestamp, message_id, retention_days)"
        f" SELECT '{SITE}', 'track', '{CONVERSION}', concat('d', toString(cityHash64(number, 2) % 50000)),"
        " toDateTime64('2026-10-01 09:00:00', 3, 'UTC') + toIntervalMillisecond(cityHash64(number, 3) % 5000000000),"
        " concat('m', toString(number)), 0 FROM numbers(40000)"
    )
    storage.insert("shared_devices", [link(f"d{d}", f"c{d // 4}", T0) for d in range(2000)])
    for model in ("time_decay", "position_based", "last_non_direct"):
        native, _ = both(storage, model)
        assert native["total_conversions"] == 40000


def test_a_row_stored_twice_counts_once_and_a_conversion_without_touches_is_direct(storage: Storage) -> None:
    day = timedelta(days=1)
    storage.insert(
        "session_touches",
        [
            touch("a", "a1", T0, "Paid Search"),
            touch("a", "a2", T0 + 2 * day, "Email"),
            touch("b", "b1", T0 + 2 * day, "Email"),  # b's contact is a's: the same ms, another session
            touch("z", "z1", T0, "Referral"),  # no conversion: never credited
        ],
    )
    storage.insert(
        "step_events",
        [
            conversion("a", T0 + 3 * day, "m1"),
            conversion("c", T0 + 3 * day, "m2"),  # no touch at all
        ],
    )
    # stored twice, in inserts apart (one insert would make them one row)
    storage.insert("session_touches", [touch("a", "a2", T0 + 2 * day, "Email")])
    storage.insert("step_events", [conversion("a", T0 + 3 * day, "m1")])
    storage.insert("shared_devices", [link("a", "u1", T0), link("b", "u1", T0)])
    native, _ = both(storage, "linear")
    assert native["total_conversions"] == 2
    credits = {r["key"]: r["credit"] for r in native["rows"]}
    assert credits == pytest.approx({"Paid Search": 1 / 3, "Email": 2 / 3, "Direct": 1.0})
    first, _ = both(storage, "first_touch", by="campaign")
    assert {r["key"]: r["credit"] for r in first["rows"]} == {"(none)": 2.0}


def test_more_rows_than_the_memory_limit_are_refused(storage: Storage) -> None:
    storage.insert("session_touches", [touch(f"d{i}", f"s{i}", T0, "Email") for i in range(30)])
    storage.insert("step_events", [conversion(f"d{i}", T0 + timedelta(hours=1), f"m{i}") for i in range(10)])
    args = (storage, SITE, CONVERSION, "linear", "channel", 30, 7.0)
    tight = AnalysisSettings(max_memory_bytes=analytics._NATIVE_CREDIT_ROW_BYTES * 15)
    with pytest.raises(analytics.BadQuery, match="more than 15 rows .* since/until"):
        analytics.attribution(*args, conf=tight)
    wide = AnalysisSettings(max_memory_bytes=analytics._NATIVE_CREDIT_ROW_BYTES * 20)
    assert analytics.attribution(*args, conf=wide)["total_conversions"] == 10


def test_rows_cut_anywhere_credit_the_same_and_bad_bytes_are_refused(storage: Storage) -> None:
    fill(storage, 9, 300)
    db = storage.database
    conversions = (
        f"SELECT device, anonymous_id, message_id, timestamp FROM {db}.step_events"
        f" WHERE site_id = {{s:String}} AND kind = 'track' AND step = {{conv:String}}"
    )
    params = {"s": SITE, "conv": CONVERSION}
    with storage.native_blocks(analytics._counted_rows(db, conversions, "channel", "", ""), params) as blocks:
        data = b"".join(blocks)
    with storage.native_blocks(f"SELECT device, contact FROM ({analytics._shared_map(db)})", params) as blocks:
        shared = b"".join(blocks)
    assert len(data) > 1000 and len(shared) > 100

    def credit(pieces: list[bytes], model: str = "time_decay") -> list[tuple[int, float, int]]:
        assert compiled.attribution_rows is not None
        counter = compiled.attribution_rows(10**6)
        counter.shared(shared)
        for piece in pieces:
            counter.feed(piece)
        return counter.credit(model, 30 * 86400.0, 7 * 86400.0, 2, 60.0)

    whole = credit([data])
    assert len(whole) >= 4 and sum(n for _, _, n in whole) > 100
    rng = random.Random(1)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        assert credit([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]) == whole
    assert credit([data[i : i + 1] for i in range(0, 300)] + [data[300:]]) == whole
    assert compiled.attribution_rows is not None
    ends_inside = compiled.attribution_rows(10**6)
    ends_inside.feed(data[:-3])
    with pytest.raises(ValueError, match="end inside a block"):
        ends_inside.credit("linear", 86400.0, 86400.0, 1, 60.0)
    with pytest.raises(ValueError, match="columns where 5"):
        compiled.attribution_rows(10**6).feed(b"\x04" + data[1:])
    with pytest.raises(ValueError, match="columns where 2"):
        compiled.attribution_rows(10**6).shared(data)
    with pytest.raises(ValueError, match="unknown attribution model"):
        credit([data], "shapley")
    late = compiled.attribution_rows(10**6)
    late.feed(data)
    with pytest.raises(TimeoutError):
        late.credit("linear", 86400.0, 86400.0, 2, 0.0)


def test_one_contact_of_many_touches_and_conversions_is_stopped_at_the_time_limit(storage: Storage) -> None:
    """A write key can give one device 20k touches and 20k conversions within a lookback: each
    conversion credits every touch before it (2e8 credits, seconds of work in one group). The count
    stops at analysis.max_execution_s within the group, not after it."""
    db = storage.database
    storage.execute(
        f"INSERT INTO {db}.session_touches (site_id, anonymous_id, session_id, timestamp, channel, source, medium,"
        " campaign, retention_days)"
        f" SELECT '{SITE}', 'big', concat('s', toString(number)),"
        " toDateTime64('2026-10-01 09:00:00', 3, 'UTC') + toIntervalSecond(number), 'Email', '', '', '', 0"
        " FROM numbers(20000)"
    )
    storage.execute(
        f"INSERT INTO {db}.step_events (site_id, kind, step, anonymous_id, timestamp, message_id, retention_days)"
        f" SELECT '{SITE}', 'track', '{CONVERSION}', 'big',"
        " toDateTime64('2026-10-01 15:00:00', 3, 'UTC') + toIntervalSecond(number), concat('m', toString(number)), 0"
        " FROM numbers(20000)"
    )
    args = (storage, SITE, CONVERSION, "time_decay", "channel", 30, 7.0)
    with pytest.raises(analytics.BadQuery, match="longer than 0.3 s .* since/until"):
        analytics.attribution(*args, conf=AnalysisSettings(max_execution_s=0.3))
    small = analytics.attribution(*args, since="2026-10-01T20:30:00Z", conf=AnalysisSettings(max_execution_s=30))
    assert small["total_conversions"] == 20000 - 5 * 3600 - 1800
    assert [r["key"] for r in small["rows"]] == ["Email"]
