"""The pixel (an <img>, which sends no Origin) checks its Referer against the site's origins:
a hit from another site's page is not stored, and the answer is the image all the same."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import Server
from tests.edge.conftest import SHOP


def hit(server: Server, aid: str, ip: str, **headers: str) -> httpx.Response:
    r = httpx.get(
        server.url + "/v1/p.gif",
        params={"key": server.site["write_key"], "aid": aid, "url": f"{SHOP}/landing"},
        headers={"x-forwarded-for": ip, **headers},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif", r.text
    return r


def test_pixel_stores_only_hits_from_the_sites_origins(tight: Server) -> None:
    run = uuid.uuid4().hex[:8]
    hit(tight, f"evil-{run}", "203.0.113.60", referer="https://evil.example/page")
    hit(tight, f"evilport-{run}", "203.0.113.60", referer=f"{SHOP}:8443/page")
    hit(tight, f"evilorigin-{run}", "203.0.113.60", origin="https://evil.example")
    hit(tight, f"shop-{run}", "203.0.113.60", referer=f"{SHOP}/cart?x=1")
    hit(tight, f"mail-{run}", "203.0.113.60")  # email clients send no Referer
    tight.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id IN ('shop-{run}', 'mail-{run}')", 2)
    rows = tight.sql(f"SELECT count() AS n FROM trailmark.events WHERE anonymous_id LIKE 'evil%-{run}'")
    assert rows == [{"n": 0}]
