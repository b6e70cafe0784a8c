"""The click map's counts by hand (journey_builder/clickmaps.py), on chDB and on a ClickHouse server:
rage clicks per visitor and element from the click times, dead clicks, the grid, and what is left out
(bots, other pages, other sites, clicks without a position in the grid)."""

from __future__ import annotations

from typing import Any

from journey_builder import clickmaps
from tests.journeys.conftest import Journey

BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def click(anon: str, second: float, selector: str, position: tuple[int, int] | None, **kw: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"selector": selector, "text": kw.pop("text", "Buy"), "dead": kw.pop("dead", False)}
    if position:  # a tracker before click maps sent no position
        x, y = position
        props |= {"x": x, "y": y, "pw": 1000, "ph": 2000, "ex": kw.pop("ex", 50), "ey": 50}
    return Journey.event("track", anon, second / 60, event="$click", path=kw.pop("path", "/pricing"),
                         properties=props, **kw)  # fmt: skip


def test_elements_rage_dead_and_grid_by_hand(journey: Journey) -> None:
    buy, hero = "button#buy", "div.hero"
    journey.send(
        *[click("a", s, buy, (100, 100)) for s in (0, 0.2, 0.4, 0.6, 0.8)],  # one burst: one rage click
        *[click("a", s, buy, (100, 100)) for s in (10, 10.6, 11.2)],  # never 3 within a second
        click("a", 12, buy, (0, 0), ex=-30),  # keyboard: outside its element, left out of the grid
        *[click("b", s, buy, (900, 1900)) for s in (0.1, 0.3)],  # b's own clicks: 2, no rage
        *[click("b", s, hero, (500, 1000), dead=True, text="Hero") for s in (20, 20.4, 20.8)],  # dead rage
        click("c", 30, "a#old", None, text="Old"),  # no position: counted, not in the grid
        click("bot", 0, buy, (100, 100), ua=BOT),
        click("a", 40, buy, (100, 100), path="/other"),
    )
    other_site = journey.enrich([click("z", 0, buy, (100, 100))])
    for e in other_site:
        e["site_id"] = "s2"
    journey.builder.process(other_site)

    m = clickmaps.click_map(journey.storage, "s1", "/pricing", days=366, limit=10, rows=10)
    assert (m["clicks"], m["visitors"], m["rage_clicks"], m["dead_clicks"]) == (15, 3, 2, 3)
    assert [(e["selector"], e["clicks"], e["visitors"], e["rage_clicks"], e["dead_clicks"]) for e in m["elements"]] == [
        (buy, 11, 2, 1, 0),
        (hero, 3, 1, 1, 3),
        ("a#old", 1, 1, 0, 0),
    ]
    assert m["elements"][0]["share"] == round(11 / 15, 4) and m["elements"][1]["text"] == "Hero"
    cells = {(c["col"], c["row"]): c["clicks"] for c in m["grid"]["cells"]}
    assert cells == {(2, 0): 8, (18, 9): 2, (10, 5): 3}
    assert (m["grid"]["cols"], m["grid"]["rows"], m["grid"]["max"]) == (20, 10, 8)

    assert [e["selector"] for e in clickmaps.click_map(journey.storage, "s1", "/pricing", days=366, limit=1,
                                                       rows=10)["elements"]] == [buy]  # fmt: skip
    assert clickmaps.click_map(journey.storage, "s2", "/pricing", days=366, limit=10, rows=10)["clicks"] == 1
    assert clickmaps.click_map(journey.storage, "s1", "/pricing", days=1, limit=10, rows=10)["clicks"] == 0


def test_selector_and_text_are_cut_whatever_a_client_sends(journey: Journey) -> None:
    journey.send(click("a", 0, "div#" + "x" * 5000, (10, 10), text="y" * 5000))
    [e] = clickmaps.click_map(journey.storage, "s1", "/pricing", days=366, limit=10, rows=10)["elements"]
    assert (len(e["selector"]), len(e["text"])) == (200, 100)
