"""The map of a site whose visitors saw one page: no paths to draw, and the page still renders
without a script error (the sankey plugin cannot draw an empty chart)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server
from tests.map.test_map_page import browser, open_map, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def one_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("onepage") / "data").start()
    try:
        event = {"type": "page", "messageId": str(uuid.uuid4()), "anonymousId": "only-one",
                 "context": {"page": {"url": "https://shop.example.com/", "path": "/"}}}  # fmt: skip
        assert server.post("/v1/batch", {"batch": [event]}).status_code == 200
        server.wait_for("SELECT count() AS n FROM trailmark.events", 1)
        yield server
    finally:
        server.stop()


def test_a_site_without_paths_renders_its_map(one_page: Server, page: Any) -> None:  # noqa: F811
    assert one_page.read("/v1/paths", params={"depth": 3, "limit": 30}).json()["links"] == []
    open_map(page, f"{one_page.url}/map?key={one_page.site['read_key']}")
    assert page.locator("#paths-chart").locator("xpath=..").locator(".empty").text_content() == "No paths yet."
    assert not page.problems, page.problems
