"""What every answer carries and what the operator's endpoints demand: nosniff on JSON, API docs
served from this server only, /metrics behind a token when one is set."""

from __future__ import annotations

import os
import re
import shutil
from urllib.parse import urljoin

import httpx
import pytest

from tests.conftest import Server
from tests.edge.conftest import METRICS_TOKEN

CHROMIUM = "/usr/bin/chromium"


def test_json_answers_say_nosniff(server: Server) -> None:
    answers = [
        server.post("/v1/batch", {"batch": [{"type": "page", "anonymousId": "nosniff"}]}),
        server.post("/v1/batch", {"batch": []}, key="wk_unknown"),
        server.read("/v1/journeys?limit=1"),
        httpx.get(server.url + "/v1/journeys?limit=1"),  # no key: 401
        httpx.get(server.url + "/healthz"),
    ]
    for r in answers:
        assert r.headers["content-type"].startswith("application/json"), r.request.url
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.status_code)


def test_docs_page_references_no_other_host(server: Server) -> None:
    r = httpx.get(server.url + "/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    assert not re.search(r"(https?:)?//[\w.-]+", r.text.replace("<!DOCTYPE", "")), r.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert len(assets) >= 3  # bundle, stylesheet, icon
    for asset in assets:
        got = httpx.get(urljoin(server.url + "/docs", asset))
        assert got.status_code == 200 and len(got.content) > 1000, asset


@pytest.mark.browser
def test_docs_render_in_a_browser_without_leaving_the_server(server: Server) -> None:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        message = f"browser tests need Debian chromium at {CHROMIUM} (make browser)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium"),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda req: requested.append(req.url))
            page.goto(server.url + "/docs")
            page.get_by_text("/v1/batch", exact=True).first.wait_for(timeout=20_000)  # document drawn
        finally:
            browser.close()
    assert requested and all(u.startswith(server.url) or u.startswith("data:") for u in requested), requested


def test_metrics_open_without_a_token_setting(server: Server) -> None:
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and "trailmark_collector_events_total" in r.text


def test_metrics_behind_the_token(tight: Server) -> None:
    assert httpx.get(tight.url + "/metrics").status_code == 401
    wrong = httpx.get(tight.url + "/metrics", headers={"authorization": "Bearer not-it"})
    assert wrong.status_code == 401 and "trailmark_" not in wrong.text
    r = httpx.get(tight.url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200 and "trailmark_collector_events_total" in r.text
