"""Funnels counted by trailmark/native (src/funnel.rs) from the step rows a query streams in the
Native format, against ClickHouse's windowFunnel over the same rows (``analytics._sql_levels``), on
chDB and on a ClickHouse server (``storage``: the server's answers arrive in HTTP chunks)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from journey_builder import analytics
from trailmark import compiled
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

SITE = "s1"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STEPS = ["/", "/pricing", "/signup", "Signed Up"]
CHANNELS = ["Organic Search", "Paid Search", "Email", "Referral", "Direct"]

pytestmark = pytest.mark.skipif(compiled.funnel_rows is None, reason="trailmark/native is not built (make native)")


def row(device: str, step: str, at: datetime, kind: str = "") -> dict[str, Any]:
    """A step_events row: a page view ("/..."), a track call, or an arrival (``kind="entry"``,
    ``step`` its channel)."""
    kind = kind or ("view" if step.startswith("/") else "track")
    return {
        "site_id": SITE,
        "kind": kind,
        "step": step,
        "anonymous_id": device,
        "timestamp": at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "message_id": f"m-{device}-{at.timestamp()}" if kind == "track" else "",
        "retention_days": 0,
    }


def random_rows(seed: int, devices: int) -> list[dict[str, Any]]:
    """Each device's steps and arrivals at distinct whole seconds (windowFunnel takes the rows of one
    second in the order it reads them; the native count in the order of their ms), minutes to days
    apart."""
    rng = random.Random(seed)
    rows = []
    for d in range(devices):
        at = T0 + timedelta(seconds=rng.randrange(86400))
        for _ in range(rng.randrange(1, 9)):
            at += timedelta(seconds=rng.choice([1, 30, 600, 3000, 7200, 90000, 400000]))
            if rng.random() < 0.3:
                rows.append(row(f"d{d}", rng.choice(CHANNELS), at, kind="entry"))
            else:
                rows.append(row(f"d{d}", rng.choice([*STEPS, "/other"]), at))
    return rows


def both(storage: Storage, steps: list[str], window_s: int, **kw: Any) -> tuple[list[int], list[int]]:
    """The step counts of the native funnel and of windowFunnel's (by channel: their splits are
    checked equal here)."""
    native = analytics.funnel(storage, SITE, steps, window_s, **kw)
    saved = compiled.funnel_rows
    compiled.funnel_rows = None
    try:
        sql = analytics.funnel(storage, SITE, steps, window_s, **kw)
    finally:
        compiled.funnel_rows = saved
    assert native["by"] == sql["by"], (steps, window_s, kw)
    return [s["count"] for s in native["steps"]], [s["count"] for s in sql["steps"]]


def test_levels_equal_window_funnel_on_random_rows(storage: Storage) -> None:
    storage.insert("step_events", random_rows(7, 400))
    for steps in (STEPS, ["/", "/pricing", "/"], ["/pricing", "/pricing"], ["Signed Up"], [*STEPS, "/other"]):
        for window in (60, 3600, 86400, 30 * 86400):
            native, sql = both(storage, steps, window)
            assert native == sql, (steps, window)
            assert both(storage, steps, window, by="channel") == (native, sql)
    native, sql = both(storage, STEPS, 86400, since="2026-11-03T00:00:00Z", until="2026-11-05T00:00:00Z")
    assert native == sql
    assert native[0] > 0 and native[1] > 0
    assert both(storage, STEPS, 86400, by="channel", since="2026-11-03T00:00:00Z") == both(
        storage, STEPS, 86400, since="2026-11-03T00:00:00Z"
    )
    whole = analytics.funnel(storage, SITE, STEPS, 86400, by="channel")
    assert set(whole["by"]) == {*CHANNELS}  # "Direct": its arrivals and the contacts with none
    assert [sum(v[i] for v in whole["by"].values()) for i in range(4)] == [s["count"] for s in whole["steps"]]


def test_many_rows_fill_every_part_and_bucket_and_count_the_same(storage: Storage) -> None:
    """420k rows of 60k devices, 7 each (a fifth arrivals), at distinct seconds of a device: each of
    the module's 64 parts holds more than one segment of rows (4,096) and its buckets more than the
    64 rows where their counting sort starts; the counts still equal windowFunnel's, by channel
    too."""
    steps = ", ".join(f"'{s}'" for s in STEPS)
    channels = ", ".join(f"'{c}'" for c in CHANNELS)
    storage.execute(
        f"INSERT INTO {storage.database}.step_events"
        " (site_id, kind, step, anonymous_id, timestamp, message_id, retention_days)"
        f" SELECT '{SITE}', multiIf(s < 3, 'view', s = 3, 'track', 'entry'),"
        f" if(s < 4, [{steps}][s + 1], [{channels}][cityHash64(number, 3) % 5 + 1]),"
        " concat('d', toString(number % 60000)),"
        " toDateTime64('2026-11-02 09:00:00', 3, 'UTC') + toIntervalSecond(cityHash64(number % 60000) % 86400"
        " + intDiv(number, 60000) * 3000 + cityHash64(number) % 2999)"
        " + toIntervalMillisecond(cityHash64(number, 2) % 1000),"
        " if(s = 3, toString(number), ''), 0"
        " FROM (SELECT number, cityHash64(number, 1) % 5 AS s FROM numbers(420000))"
    )
    counted = storage.query(f"SELECT count() AS n FROM {storage.database}.step_events WHERE kind != 'entry'")
    assert int(counted[0]["n"]) > 64 * 4096
    for window in (3600, 3 * 86400):
        native, sql = both(storage, STEPS, window)
        assert native == sql and native[2] > 0, window
    assert both(storage, STEPS, 86400, by="channel") == both(storage, STEPS, 86400)


def test_one_row_makes_every_step_it_is_and_the_same_second_goes_by_ms(storage: Storage) -> None:
    storage.insert(
        "step_events",
        [
            row("once", "/", T0),  # one view of "/": steps 1 and 2 of "/, /", as windowFunnel counts it
            row("once", "/signup", T0 + timedelta(seconds=5)),
            # the same second, in order by ms: "/" then "/pricing"
            row("quick", "/", T0 + timedelta(milliseconds=100)),
            row("quick", "/pricing", T0 + timedelta(milliseconds=900)),
            # "/pricing" first in the same second: no chain
            row("backwards", "/pricing", T0 + timedelta(milliseconds=100)),
            row("backwards", "/", T0 + timedelta(milliseconds=900)),
        ],
    )
    native, sql = both(storage, ["/", "/", "/signup"], 60)
    assert native == sql == [3, 3, 1]
    assert both(storage, ["/", "/pricing"], 60)[0] == [3, 1]


def test_a_funnel_of_more_rows_than_the_memory_limit_is_refused(storage: Storage) -> None:
    storage.insert("step_events", [row(f"d{i}", "/", T0 + timedelta(seconds=i)) for i in range(40)])
    conf = AnalysisSettings(max_memory_bytes=analytics._NATIVE_ROW_BYTES * 30)
    with pytest.raises(analytics.BadQuery, match="more than 30 rows .* since/until"):
        analytics.funnel(storage, SITE, ["/"], 60, conf=conf)
    wide = AnalysisSettings(max_memory_bytes=analytics._NATIVE_ROW_BYTES * 40)
    assert analytics.funnel(storage, SITE, ["/"], 60, conf=wide)["steps"][0]["count"] == 40


def test_rows_cut_anywhere_count_the_same_and_broken_bytes_are_refused(storage: Storage) -> None:
    assert compiled.funnel_rows is not None
    storage.insert("step_events", random_rows(3, 200))
    sql = (
        "SELECT device, toUnixTimestamp64Milli(timestamp) AS ms,"
        " toUInt8((step = '/') + (step = '/pricing') * 2) AS mask"
        f" FROM {storage.database}.step_events WHERE site_id = {{s:String}} AND step IN ('/', '/pricing')"
    )
    with storage.native_blocks(sql, {"s": SITE}) as blocks:
        data = b"".join(blocks)
    assert len(data) > 1000

    def levels(pieces: list[bytes]) -> list[int]:
        assert compiled.funnel_rows is not None
        counter = compiled.funnel_rows(2, 3600, 10**6)
        for piece in pieces:
            counter.feed(piece)
        return counter.levels(2)

    whole = levels([data])
    assert whole[1] > 0 and whole[2] > 0
    rng = random.Random(1)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        assert levels([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]) == whole
    assert levels([data[i : i + 1] for i in range(0, 300)] + [data[300:]]) == whole
    assert compiled.funnel_rows is not None
    ends_inside = compiled.funnel_rows(2, 3600, 10**6)
    ends_inside.feed(data[:-3])
    with pytest.raises(ValueError, match="end inside a block"):
        ends_inside.levels(1)
    mask3 = compiled.funnel_rows(1, 3600, 10**6)  # a mask with a bit past its one step
    with pytest.raises(ValueError, match="step mask"):
        mask3.feed(data)
    with pytest.raises(ValueError, match="arrivals come after levels"):
        compiled.funnel_rows(2, 3600, 10**6, True).arrivals(data)
    garbage = compiled.funnel_rows(2, 3600, 10**6)
    with pytest.raises(ValueError, match="columns where 3"):
        garbage.feed(b"\x05" + data[1:])
