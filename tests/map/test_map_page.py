"""The journey map in a real browser: ``trailmark up`` with the docs dataset, /map in headless Chromium,
the whole-site view and one contact's view, checked in the DOM, in the charts' pixels and in a
screenshot (saved under the test's tmp dir)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.docs.dataset import CURRENT_STAGES, ENTERED_STAGES, Dataset, post_dataset
from tests.map.png import colour_stats

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
STAGES = ["Awareness", "Consideration", "Decision", "Retention", "Advocacy"]
# the non-transparent pixels of a canvas (a drawn chart has thousands)
PAINTED = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Dataset]]:
    server = Server(tmp_path_factory.mktemp("map") / "data").start()
    try:
        r = httpx.get(server.url + "/map", timeout=10)
        if r.status_code == 404:
            pytest.fail(
                "GET /map is 404: map_router() is not included in the app yet "
                "(read_api.py: router.include_router(map_router()))"
            )
        yield server, post_dataset(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip("needs Debian chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, reduced_motion="reduce")
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and "favicon" not in m.text and "404" not in m.text
            else None
        ),
    )
    pg.problems = problems
    yield pg
    ctx.close()


def open_map(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body:not([data-state=loading])", timeout=30_000)
    state = page.get_attribute("body", "data-state")
    assert state == "ready", f"state {state}: {page.text_content('#error')!r} {page.problems}"


def check_screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    colours, top_share = colour_stats(path)
    assert colours > 300, f"{path}: only {colours} colours"
    assert top_share < 0.9, f"{path}: {top_share:.0%} of the page is one colour"


def test_whole_site_map(srv: tuple[Server, Dataset], page: Any, tmp_path: Path) -> None:
    server, _ = srv
    key = server.site["read_key"]
    open_map(page, f"{server.url}/map?key={key}")
    assert "key=" not in page.url  # moved to sessionStorage, out of the address bar and history
    assert page.evaluate("() => sessionStorage.getItem('trailmark.readKey')") == key

    cols = page.locator("#stages .stage")
    assert [cols.nth(i).get_attribute("data-stage") for i in range(cols.count())] == STAGES
    counts = {s: int(page.get_attribute(f'#stages .stage[data-stage="{s}"] .count', "data-count")) for s in STAGES}
    assert counts == CURRENT_STAGES
    entered = {s: int(page.get_attribute(f'#stages .stage[data-stage="{s}"] .entered', "data-entered")) for s in STAGES}
    assert entered == ENTERED_STAGES
    awareness = page.text_content('#stages .stage[data-stage="Awareness"]')
    assert "Paid Search" in awareness and "visit" in awareness  # top channels and touchpoint kinds
    assert "conversion" in page.text_content('#stages .stage[data-stage="Decision"]')

    steps = page.locator("#funnel-steps-list li")
    assert [int(steps.nth(i).get_attribute("data-count")) for i in range(steps.count())] == [4, 2, 2]
    for canvas in ("funnel-chart", "attribution-chart", "paths-chart"):
        assert page.evaluate(PAINTED, canvas) > 2000, f"{canvas} is blank"
    links = server.read("/v1/paths", params={"depth": 3, "limit": 30}).json()["links"]
    assert page.evaluate("() => Chart.getChart('paths-chart').data.datasets[0].data.length") == len(links)
    assert page.evaluate("() => Chart.getChart('paths-chart').config.type") == "sankey"
    assert page.locator("#exit-pages tbody tr").count() > 0
    check_screenshot(page, tmp_path / "map-site.png")
    assert not page.problems, page.problems


def test_one_contact_map(srv: tuple[Server, Dataset], page: Any, tmp_path: Path) -> None:
    server, _ = srv
    open_map(page, f"{server.url}/map?key={server.site['read_key']}&contact=u-jane")
    assert page.get_attribute("[data-stage-now]", "data-stage-now") == "Advocacy"
    assert page.get_attribute("[data-devices]", "data-devices") == "2"
    assert page.get_attribute("[data-sessions]", "data-sessions") == "3"

    lanes = page.locator("#lanes .stage")
    assert [lanes.nth(i).get_attribute("data-stage") for i in range(lanes.count())] == STAGES
    journey = server.read("/v1/journeys/u-jane").json()
    expected = {s: sum(1 for t in journey["touchpoints"] if (t["stage"] or "Awareness") == s) for s in STAGES}
    shown = {s: int(page.get_attribute(f'#lanes .stage[data-stage="{s}"] .touchpoints', "data-count")) for s in STAGES}
    assert shown == expected and sum(shown.values()) == len(journey["touchpoints"]) >= 5
    assert page.locator('#lanes .stage[data-stage="Decision"] .tp[data-kind="conversion"]').count() == 1
    assert "Signed Up" in page.text_content('#lanes .stage[data-stage="Decision"]')

    rows = page.locator("#sessions tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).locator("td").nth(2).text_content() for i in range(3)] == ["Paid Search", "Email", "Direct"]
    assert page.evaluate(PAINTED, "timeline-chart") > 1000
    check_screenshot(page, tmp_path / "map-contact.png")
    assert not page.problems, page.problems


def test_asks_for_the_key_and_rejects_a_wrong_one(srv: tuple[Server, Dataset], page: Any) -> None:
    server, _ = srv
    page.goto(f"{server.url}/map")
    page.wait_for_selector("body[data-state=need-key]")
    assert page.is_visible("#key-panel") and not page.is_visible("#site-view")
    page.fill("#key-input", "rk_wrong")
    page.click("#key-form button")
    page.wait_for_selector("body[data-state=need-key] #error:not([hidden])")
    assert "key" in page.text_content("#error").lower()
    page.fill("#key-input", server.site["read_key"])
    page.click("#key-form button")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert page.is_visible("#site-view")
    page.problems.clear()  # the rejected key's 401 is logged by the browser


def test_an_unknown_contact_says_so(srv: tuple[Server, Dataset], page: Any) -> None:
    server, _ = srv
    page.goto(f"{server.url}/map?key={server.site['read_key']}&contact=nobody-here")
    page.wait_for_selector("body[data-state=error]")
    assert "nobody-here" in page.text_content("#error")
    page.problems.clear()
