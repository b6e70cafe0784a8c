"""The journey map's stage KPIs, personas, retention and moments sections in headless Chromium, on
``trailmark up`` with the docs dataset plus purchases and NPS/CSAT answers; one screenshot per
section (under the test's tmp dir), each checked non-empty and visible."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.docs.dataset import post_dataset
from tests.map.png import colour_stats
from tests.map.test_map_page import PAINTED, browser, open_map, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("map-insights") / "data").start()
    try:
        post_dataset(server)
        now = datetime.now(UTC).replace(microsecond=0)
        extra = []
        for i, (score, revenue) in enumerate([(10, 120.0), (9, 80.0), (4, 0.0)]):
            anon = f"buyer-{i}-{uuid.uuid4().hex[:6]}"
            at = now - timedelta(days=3 + i)

            def ev(kind: str, minutes: int, _a: str = anon, _t: datetime = at, **kw: Any) -> dict[str, Any]:
                path = kw.pop("path", "/")
                return {
                    "type": kind,
                    "messageId": str(uuid.uuid4()),
                    "anonymousId": _a,
                    "timestamp": (_t + timedelta(minutes=minutes)).isoformat(),
                    "context": {"page": {"url": f"https://shop.example.com{path}", "path": path}},
                    **kw,
                }

            extra += [ev("page", 0), ev("page", 1, path="/pricing")]
            if revenue:
                extra.append(ev("track", 2, event="Order Completed", properties={"revenue": revenue}))
            extra += [
                ev("track", 3, event="NPS Answered", properties={"score": score}),
                ev("track", 4, event="CSAT Answered", properties={"score": 5 if revenue else 2}),
            ]
        assert server.post("/v1/batch", {"batch": extra}).status_code == 200
        server.wait_for("SELECT count() FROM trailmark.events WHERE event = 'CSAT Answered'", 3)
        yield server
    finally:
        server.stop()


def shoot(pg: Any, selector: str, path: Path) -> None:
    """A screenshot of one section: visible, non-empty, more than one colour."""
    section = pg.locator(selector)
    assert section.is_visible()
    box = section.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100, box
    section.screenshot(path=str(path))
    assert path.stat().st_size > 2000
    colours, top_share = colour_stats(path)
    assert colours > 20 and top_share < 0.97, (path, colours, top_share)
    print(f"screenshot: {path}")


def test_insight_sections(srv: Server, page: Any, tmp_path: Path) -> None:  # noqa: F811
    open_map(page, f"{srv.url}/map?key={srv.site['read_key']}")
    for name in ("kpis", "personas", "retention", "moments"):
        page.wait_for_selector(f"body[data-{name}=ready]", timeout=30_000)

    kpi = srv.read("/v1/kpis", params={"weeks": 12}).json()
    cards = page.locator("#kpi-band .kpi")
    assert cards.count() == 5
    assert page.get_attribute("#kpi-band .kpi >> nth=0", "data-stage") == "Awareness"
    assert f"NPS {kpi['feedback']['nps']['nps']}" in page.text_content("#kpi-feedback")
    assert kpi["totals"]["revenue"] == 200.0 and "revenue 200" in page.text_content("#kpi-feedback")
    assert page.evaluate(PAINTED, "kpi-chart") > 500
    shoot(page, "#kpis", tmp_path / "kpis.png")

    columns = page.locator("#persona-columns .persona")
    assert 1 <= columns.count() <= 3
    assert page.locator("#persona-columns .persona .bars li").count() > 0
    shoot(page, "#personas", tmp_path / "personas.png")

    assert page.locator("#retention-table tbody tr").count() >= 1
    assert page.locator("#retention-table td.cell").count() >= 1
    shoot(page, "#retention", tmp_path / "retention.png")

    # the default minimum support (20) is more than this small site has; ask for 1
    page.fill("#moments-support", "1")
    page.fill("#moments-conversion", "Order Completed")
    page.evaluate("() => { delete document.body.dataset.moments; }")
    page.click("#moments-form button")
    page.wait_for_selector("body[data-moments=ready]", timeout=30_000)
    assert page.locator("#moments-list .moments li").count() > 0
    assert "CI" in page.text_content("#moments-list")
    assert page.text_content("#moments-list .moments-at").startswith("computed 20")  # when (kept answers)
    shoot(page, "#moments", tmp_path / "moments.png")
    # the kept answer computed again on request: the same question with fresh=true
    with page.expect_request(lambda r: "/v1/moments?" in r.url and "fresh=true" in r.url) as asked:
        page.click("#moments-list .moments-at button")
    assert "min_support=1" in asked.value.url
    page.wait_for_selector("body[data-moments=ready]", timeout=30_000)
    assert page.locator("#moments-list .moments li").count() > 0

    # a persona filter reaches the API and the band redraws
    page.select_option("#kpi-persona", "Other")
    page.evaluate("() => { delete document.body.dataset.kpis; }")
    page.click("#kpi-form button")
    page.wait_for_selector("body[data-kpis=ready]", timeout=30_000)
    assert not page.problems, page.problems
