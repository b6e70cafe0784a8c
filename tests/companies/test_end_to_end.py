"""Through a real ``trailmark up``: a contact with a company email gets its company's profile
(read through /v1/sql), while a company website that hangs does not hold up event processing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.companies.sites import Sites
from tests.conftest import Server


@pytest.fixture
def server(sites: Sites, tmp_path: Path) -> Iterator[Server]:
    cfg = sites.settings_env(timeout_s=15.0, retries=0)
    env = {f"TRAILMARK_COMPANIES__{k.upper()}": v if isinstance(v, str) else orjson.dumps(v).decode()
           for k, v in cfg.items()}  # fmt: skip
    srv = Server(tmp_path / "data", env=env).start()
    yield srv
    srv.stop()


def identify(user: str, email: str) -> dict[str, object]:
    return {"type": "identify", "userId": user, "anonymousId": f"anon-{user}", "traits": {"email": email}}


def test_a_company_email_gets_a_profile_while_a_hung_website_does_not_slow_events(sites: Sites, server: Server) -> None:
    sites.slow_s = 25.0  # longer than the test: its lookup hangs throughout
    slow_before = len(sites.record.paths("slow.example"))
    r = server.post("/v1/batch", {"batch": [identify("u-slow", "sam@slow.example")]})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while len(sites.record.paths("slow.example")) < slow_before + 2:  # robots.txt, then the hanging page
        assert time.monotonic() < deadline, "the slow site was never asked"
        time.sleep(0.05)

    started = time.monotonic()
    pages = [{"type": "page", "anonymousId": f"v{i}", "messageId": f"e2e-page-{i}",
              "context": {"page": {"url": f"https://shop.example/p/{i}"}}} for i in range(500)]  # fmt: skip
    for i in range(0, 500, 50):
        assert server.post("/v1/batch", {"batch": pages[i : i + 50]}).status_code == 200
    r = server.post("/v1/batch", {"batch": [identify("u-jane", "jane@acme-jsonld.example")]})
    assert r.status_code == 200
    server.wait_for("SELECT count() FROM trailmark.events WHERE message_id LIKE 'e2e-page-%'", 500, timeout=15)
    flowed = time.monotonic() - started
    assert flowed < 10, f"events took {flowed:.1f} s while a lookup hung"

    rows = server.wait_for(
        "SELECT count() AS n, any(company_name) AS name, any(country) AS country, any(mail_provider) AS mail,"
        " any(field_sources) AS src FROM trailmark.contact_companies WHERE contact_id = 'user:u-jane'",
        1,
        timeout=20,
    )
    assert (rows[0]["name"], rows[0]["country"], rows[0]["mail"]) == ("Acme Widgets", "DE", "Google Workspace")
    src = orjson.loads(rows[0]["src"])
    assert src["name"] == f"http://acme-jsonld.example:{sites.port}/"
    assert src["mail_provider"] == "dns:MX acme-jsonld.example"
    # the slow site is still hanging: no profile yet, and nothing else waited for it
    assert server.sql("SELECT count() AS n FROM trailmark.company_profiles WHERE domain = 'slow.example'")[0]["n"] == 0
    assert server.alive
