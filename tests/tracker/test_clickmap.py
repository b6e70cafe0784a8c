"""Click maps end to end: clicks at known positions in Chromium -> t.js -> ``trailmark up`` ->
``GET /v1/clicks`` (elements, rage and dead clicks, the density grid); the overlay drawn over the
fixture page; the map page's click-map section, screenshot included."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.map.png import colour_stats
from tests.tracker.conftest import LIVE, Site, Tab, of, until

pytestmark = pytest.mark.browser

PAGE = "/clickmap.html"
ROWS = 20
VIEWPORT = {"width": 1000, "height": 800}


@pytest.fixture(scope="module")
def clicked(browser: Any, site_server: Site, collector: Server) -> Iterator[dict[str, Any]]:
    """One visit to the fixture page with clicks at known places; returns what the page measured."""
    site_server.reset()
    tab = Tab(browser, site_server, viewport=VIEWPORT)
    LIVE.append(tab)
    requested: list[str] = []
    tab.page.on("request", lambda r: requested.append(r.url))
    try:
        tab.goto("clickmap.html")
        aid = tab.aid
        mouse = tab.page.mouse
        mouse.click(150, 210)  # #buy (100,200 200x50): 25 %, 20 % of it
        mouse.click(250, 240)  # #buy: 75 %, 80 %
        for _ in range(3):
            mouse.click(650, 120)  # #rage, three times within a second
        tab.page.click("ul.menu li:nth-child(2)")  # not clickable: a dead click
        tab.page.click("#evil")
        tab.page.click(".long button")
        tab.js("scrollTo(0, 600)")
        mouse.click(650, 450)  # .plain at page y 1050: dead
        size = tab.js("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        of(collector, aid, 9, "event = '$click'")
        yield {"aid": aid, "pw": size[0], "ph": size[1], "requested": requested, "tab_errors": tab.errors}
    finally:
        LIVE.remove(tab)
        tab.close()


def clicks(server: Server, **params: Any) -> dict[str, Any]:
    r = server.read("/v1/clicks", params={"page": PAGE, "rows": ROWS, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_clicks_carry_selector_and_positions(clicked: dict[str, Any], collector: Server) -> None:
    sent = [e["properties"] for e in of(collector, clicked["aid"], 9, "event = '$click'")]
    buy = [p for p in sent if p["selector"] == "button#buy"]
    assert [(p["x"], p["y"], p["ex"], p["ey"]) for p in buy] == [(150, 210, 25, 20), (250, 240, 75, 80)]
    assert {(p["pw"], p["ph"]) for p in sent} == {(clicked["pw"], clicked["ph"])}
    assert all(p["dead"] is False and p["text"] == "Buy now" for p in buy)
    li = next(p for p in sent if p["selector"].startswith("ul"))
    assert li == {**li, "selector": "ul.menu>li:nth-of-type(2)", "text": "Two", "tag": "li", "dead": True}
    plain = next(p for p in sent if p["selector"].startswith("div.plain"))
    assert (plain["y"], plain["dead"]) == (1050, True)  # document position, below the first screen
    long = next(p for p in sent if p["selector"].startswith("button#xxx"))
    assert len(long["selector"]) == 200 and len(long["text"]) == 100  # bounded
    assert not any("overlay" in u for u in clicked["requested"])  # never loaded for a visitor
    assert not clicked["tab_errors"]


def test_click_map_by_element_with_rage_and_dead_clicks(clicked: dict[str, Any], collector: Server) -> None:
    body = clicks(collector)
    assert (body["page"], body["clicks"], body["visitors"]) == (PAGE, 9, 1)
    assert (body["rage_clicks"], body["dead_clicks"]) == (1, 2)
    by = {e["selector"]: e for e in body["elements"]}
    assert [e["selector"] for e in body["elements"][:2]] == ["button#rage", "button#buy"]
    assert by["button#rage"] == {**by["button#rage"], "clicks": 3, "rage_clicks": 1, "dead_clicks": 0}
    assert by["button#buy"] == {
        "selector": "button#buy",
        "text": "Buy now",
        "href": None,
        "clicks": 2,
        "visitors": 1,
        "rage_clicks": 0,
        "dead_clicks": 0,
        "share": round(2 / 9, 4),
    }
    assert by["ul.menu>li:nth-of-type(2)"]["dead_clicks"] == 1
    assert by["button#evil"]["text"] == '<img src=x onerror="window.pwned=1">'  # stored as text

    grid = body["grid"]
    assert (grid["cols"], grid["rows"]) == (20, ROWS)
    cells = {(c["col"], c["row"]): c["clicks"] for c in grid["cells"]}
    pw, ph = clicked["pw"], clicked["ph"]

    def cell(x: float, y: float) -> tuple[int, int]:
        return math.floor(x / pw * 20), math.floor(y / ph * ROWS)

    assert cells[cell(650, 120)] == 3  # the rage clicks
    assert cells[cell(150, 210)] >= 1 and cells[cell(650, 1050)] == 1
    assert sum(cells.values()) == 9 and grid["max"] == 3
    assert clicks(collector, limit=1)["elements"][0]["selector"] == "button#rage"
    assert clicks(collector, page="/nowhere")["clicks"] == 0


def test_clicks_need_the_read_key_and_valid_parameters(clicked: dict[str, Any], collector: Server) -> None:
    url = collector.url + "/v1/clicks"
    assert httpx.get(url, params={"page": PAGE}).status_code == 401
    write = {"authorization": f"Bearer {collector.site['write_key']}"}
    assert httpx.get(url, params={"page": PAGE}, headers=write).status_code == 403
    for bad in ({}, {"page": "pricing"}, {"page": PAGE, "limit": 0}, {"page": PAGE, "rows": 500},
                {"page": PAGE, "days": 0}, {"page": "/" + "x" * 3000}):  # fmt: skip
        assert collector.read("/v1/clicks", params=bad).status_code == 400, bad
    read = {"authorization": f"Bearer {collector.site['read_key']}", "origin": "https://shop.example"}
    r = httpx.get(url, params={"page": PAGE}, headers=read)
    assert r.headers["access-control-allow-origin"] == "*" and "access-control-allow-credentials" not in r.headers


def test_the_overlay_draws_the_clicks_over_the_page(
    clicked: dict[str, Any], collector: Server, open_tab: Any, site: Site, tmp_path: Path
) -> None:
    tab: Tab = open_tab(viewport=VIEWPORT)
    tab.goto("clickmap.html")
    prompts: list[str] = []

    def answer(dialog: Any) -> None:
        prompts.append(dialog.message)
        dialog.accept(collector.site["read_key"])

    tab.page.on("dialog", answer)
    load = f"""() => {{ const s = document.createElement('script');
      s.src = {collector.url!r} + '/map/static/overlay.js'; document.body.append(s) }}"""
    tab.js(load)
    tab.page.wait_for_selector("#trailmark-overlay [data-part=panel]")
    overlay = tab.page.locator("#trailmark-overlay")
    grid = clicks(collector, rows=40)["grid"]  # the overlay asks with the default rows
    assert overlay.locator("[data-part=cell]").count() == len(grid["cells"])
    labels = {m.get_attribute("data-selector"): m.text_content() for m in overlay.locator("[data-part=element]").all()}
    assert labels["button#buy"] == "2 clicks · 22%"
    assert labels["button#rage"] == "3 clicks · 33% · 1 rage"
    assert labels["div.plain:nth-of-type(1)"] == "1 click · 11% · 1 dead"
    assert '<img src=x onerror="window.pwned=1">' in overlay.locator("[data-part=panel]").text_content()
    assert overlay.locator("img").count() == 0 and tab.js("window.pwned") is None  # text, never HTML
    assert tab.js("sessionStorage.getItem('trailmark.overlayKey')") == collector.site["read_key"]
    assert len(prompts) == 1 and "read key" in prompts[0]
    tab.page.screenshot(path=str(tmp_path / "overlay.png"))
    assert collector.site["read_key"] not in tab.page.url

    tab.js(load)  # loading it again takes it away, without asking for the key again
    until(lambda: tab.page.locator("#trailmark-overlay").count() == 0, what="overlay removed")
    assert len(prompts) == 1
    assert not tab.errors


def test_a_wrong_key_is_not_kept(clicked: dict[str, Any], collector: Server, open_tab: Any, site: Site) -> None:
    tab: Tab = open_tab(viewport=VIEWPORT)
    tab.goto("clickmap.html")
    tab.page.on("dialog", lambda d: d.accept("rk_wrong"))
    tab.js(f"""() => {{ const s = document.createElement('script');
      s.src = {collector.url!r} + '/map/static/overlay.js'; document.body.append(s) }}""")
    panel = tab.page.wait_for_selector("#trailmark-overlay [data-part=panel]")
    assert "could not load" in (panel.text_content() or "")
    assert tab.js("sessionStorage.getItem('trailmark.overlayKey')") is None


def test_the_map_page_shows_the_click_map(
    clicked: dict[str, Any], collector: Server, browser: Any, tmp_path: Path
) -> None:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, reduced_motion="reduce")
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # two pages of another visitor: the map's paths chart fails on a site without one path link
        views = [{"type": "page", "anonymousId": "map-visitor", "context": {"page": {"url": f"https://shop.example{p}"}}}
                 for p in ("/", "/pricing")]  # fmt: skip
        assert collector.post("/v1/batch", {"batch": views}).status_code == 200
        collector.wait_for("SELECT count() FROM trailmark.events WHERE anonymous_id = 'map-visitor'", 2)
        page.goto(f"{collector.url}/map?key={collector.site['read_key']}")
        page.wait_for_selector("body:not([data-state=loading])", timeout=30_000)
        state = page.get_attribute("body", "data-state")
        assert state == "ready", f"{state}: {page.text_content('#error')!r} {errors}"
        page.wait_for_selector("body[data-clickmap=ready]")
        page.fill("#clickmap-page", PAGE)
        page.click("#clickmap-form button")
        page.wait_for_selector('#clickmap-elements tr[data-selector="button#rage"]')
        rows = page.locator("#clickmap-elements tbody tr")
        assert rows.count() == 6
        assert rows.nth(0).locator("td").all_text_contents() == ["button#rage", "Slow button", "3", "33.3%", "1", "0"]
        hot = page.locator("#clickmap-grid .cell.hot")
        assert hot.count() == len(clicks(collector)["grid"]["cells"])
        assert page.locator("#clickmap-grid .cell").count() == 20 * 20
        assert "overlay.js" in (page.get_attribute("#clickmap-bookmarklet", "href") or "")
        shot = tmp_path / "clickmap.png"
        page.locator("#clickmap").screenshot(path=str(shot))
        colours, top_share = colour_stats(shot)
        assert colours > 20 and top_share < 0.95, (colours, top_share)
        assert not errors, errors
    finally:
        ctx.close()
