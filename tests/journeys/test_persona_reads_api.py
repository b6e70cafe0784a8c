"""``persona=`` on the older reads through a real ``trailmark up`` with two sites and a personas file:
each route with and without a persona, a persona nobody is in, an unknown persona (400 naming the
known ones), another site's read key, and OpenAPI. The stream is test_persona_reads.py's (its
docstring says who is in which persona); the exact figures per read are checked there, in process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.conftest import CHROME_UA, Server
from tests.journeys.conftest import IPHONE
from tests.sql.conftest import TwoSites
from trailmark.keys import new_site

PERSONAS = """
default = "Other"
[[persona]]
name = "Pricing"
rules = [{ pages = ["/pricing"] }]
[[persona]]
name = "Mobile"
rules = [{ device = ["mobile"] }]
[[persona]]
name = "Ghost"
rules = [{ events = ["Never Sent"] }]
"""
READS = ["/v1/journeys", "/v1/stages", "/v1/funnel", "/v1/paths", "/v1/attribution", "/v1/pain-points", "/v1/clicks"]
CLICK = {"selector": "button#buy", "text": "Buy", "x": 10, "y": 10, "pw": 100, "ph": 100, "ex": 50, "ey": 50}


class Sites(TwoSites):
    """Both sites of the server (``a``: alpha, ``b``: beta), read through their read keys."""

    def get(self, path: str, site: dict[str, Any] | None = None) -> httpx.Response:
        key = (site or self.a)["read_key"]
        return httpx.get(self.server.url + path, headers={"authorization": f"Bearer {key}"}, timeout=60)

    def ok(self, path: str, site: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.get(path, site)
        assert r.status_code == 200, r.text + self.server.tail(2000)
        body: dict[str, Any] = r.json()
        return body


def ev(kind: str, anon: str, minutes_ago: float, path: str = "/", ua: str = CHROME_UA, **kw: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "timestamp": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "context": {"page": {"url": f"https://shop.example.com{path}", "path": path}, "userAgent": ua},
        **kw,
    }


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("persona_reads")
    (root / "personas.toml").write_text(PERSONAS)
    data = root / "data"
    data.mkdir()
    both = [new_site("alpha"), new_site("beta")]
    (data / "keys.json").write_bytes(orjson.dumps({"sites": both}))
    (data / "keys.json").chmod(0o600)
    env = {"TRAILMARK_JOURNEYS__ANALYSIS__PERSONAS_FILE": str(root / "personas.toml")}
    server = Server(Path(data), env=env).start()
    try:
        s = Sites(server, [dict(x) for x in both])
        cpc = "/?utm_source=google&utm_medium=cpc"
        s.post(
            s.a, [ev("page", "a1", 90, cpc), ev("page", "a1", 89, "/pricing"), ev("identify", "a1", 88, userId="u1")]
        )
        s.post(
            s.a,
            [
                ev("page", "b", 85, ua=IPHONE),
                ev("page", "b", 84, "/signup", ua=IPHONE),
                ev("track", "b", 83, ua=IPHONE, event="Signed Up"),
                ev("track", "b", 82, ua=IPHONE, event="$error", properties={"message": "boom", "source": "app.js"}),
                ev("track", "b", 81, "/signup", ua=IPHONE, event="$click", properties=CLICK),
            ],
        )
        s.post(
            s.a,
            [
                ev("page", "c", 80),
                ev("page", "c", 79, "/about"),
                ev("track", "c", 78, "/signup", event="$click", properties=CLICK),
            ],
        )
        s.post(
            s.a,
            [
                ev("page", "a3", 30, ua=IPHONE),
                ev("page", "a3", 29, "/signup", ua=IPHONE),
                ev("track", "a3", 28, ua=IPHONE, event="Signed Up"),
                ev("identify", "a3", 27, ua=IPHONE, userId="u1"),
            ],
        )
        # site beta: c looks at pricing, b becomes u1 (on alpha neither is true)
        s.post(
            s.b, [ev("page", "c", 10, "/pricing"), ev("page", "b", 9, "/pricing"), ev("identify", "b", 8, userId="u1")]
        )
        deadline = time.time() + 30  # events are written last: once they are in, so is the rest
        while _events(s, s.a) < 15 or _events(s, s.b) < 3:
            assert time.time() < deadline, "the events never reached the journeys"
            time.sleep(0.2)
        yield s
    finally:
        server.stop()


def _events(s: Sites, site: dict[str, Any]) -> int:
    return int(s.rows("SELECT count() AS n FROM trailmark.events", site)[0]["n"])


def _ids(body: dict[str, Any]) -> set[str]:
    return {c["contact_id"] for c in body["contacts"]}


def test_journeys_list(sites: Sites) -> None:
    assert _ids(sites.ok("/v1/journeys")) == {"user:u1", "anon:b", "anon:c"}
    [u1] = sites.ok("/v1/journeys?persona=Pricing")["contacts"]
    assert (u1["contact_id"], u1["sessions"], u1["conversions"]) == ("user:u1", 2, 1)
    assert _ids(sites.ok("/v1/journeys?persona=Mobile&stage=Decision")) == {"anon:b"}
    assert _ids(sites.ok("/v1/journeys?persona=Other")) == {"anon:c"}
    assert _ids(sites.ok("/v1/journeys?persona=Ghost")) == set()


def test_the_other_sites_personas_are_its_own(sites: Sites) -> None:
    # on beta, c and u1 (device b) looked at /pricing; alpha's c and b are not Pricing on alpha
    beta = sites.ok("/v1/journeys?persona=Pricing", sites.b)["contacts"]
    assert {(c["contact_id"], c["sessions"]) for c in beta} == {("anon:c", 1), ("user:u1", 1)}
    assert _ids(sites.ok("/v1/journeys?persona=Pricing")) == {"user:u1"}
    funnel = sites.ok("/v1/funnel?steps=/pricing&persona=Pricing", sites.b)
    assert funnel["steps"][0]["count"] == 2
    assert sites.ok("/v1/funnel?steps=/pricing&persona=Pricing")["steps"][0]["count"] == 1


def test_stages_funnel_paths_attribution_pain_points(sites: Sites) -> None:
    stages = {s["stage"]: s["contacts"] for s in sites.ok("/v1/stages?persona=Mobile")["stages"]}
    assert (stages["Awareness"], stages["Decision"]) == (0, 1)
    assert {s["stage"]: s["contacts"] for s in sites.ok("/v1/stages")["stages"]}["Decision"] == 2
    steps = quote("/,/signup,Signed Up")
    for persona, counts in (("", [3, 2, 2]), ("Pricing", [1, 1, 1]), ("Other", [1, 0, 0]), ("Ghost", [0, 0, 0])):
        got = sites.ok(f"/v1/funnel?steps={steps}&persona={persona}")
        assert [x["count"] for x in got["steps"]] == counts, persona
    paths = sites.ok("/v1/paths?persona=Mobile")["paths"]
    assert paths == [{"path": ["/", "/signup", "Signed Up"], "count": 1}]
    assert len(sites.ok("/v1/paths")["paths"]) == 3
    attr = sites.ok("/v1/attribution?conversion=Signed%20Up&model=first_touch&persona=Pricing")
    assert (attr["total_conversions"], [(r["key"], r["credit"]) for r in attr["rows"]]) == (1, [("Paid Search", 1.0)])
    assert sites.ok("/v1/attribution?conversion=Signed%20Up&model=first_touch")["total_conversions"] == 2
    pain = sites.ok("/v1/pain-points?persona=Other")
    assert ([x["page"] for x in pain["exit_pages"]], pain["errors"]) == (["/about"], [])
    assert [e["message"] for e in sites.ok("/v1/pain-points?persona=Mobile")["errors"]] == ["boom"]
    clicks = {p: sites.ok(f"/v1/clicks?page=/signup&persona={p}")["clicks"] for p in ("", "Mobile", "Other", "Pricing")}
    assert clicks == {"": 2, "Mobile": 1, "Other": 1, "Pricing": 0}
    assert sites.ok("/v1/clicks?page=/signup", sites.b)["clicks"] == 0  # alpha's clicks are alpha's


@pytest.mark.parametrize("read", READS)
def test_unknown_or_too_long_persona_is_400(sites: Sites, read: str) -> None:
    path = read + {"/v1/funnel": "?steps=/", "/v1/clicks": "?page=/"}.get(read, "?")
    r = sites.get(f"{path}&persona=Nobody")
    assert r.status_code == 400, r.text
    assert "unknown persona 'Nobody'; use one of Pricing, Mobile, Ghost, Other" in r.text
    assert sites.get(f"{path}&persona={'x' * 65}").status_code == 400


def test_openapi_documents_persona(sites: Sites) -> None:
    spec = httpx.get(sites.server.url + "/openapi.json", timeout=30).json()
    for read in READS:
        params = {p["name"]: p for p in spec["paths"][read]["get"]["parameters"]}
        assert params["persona"]["in"] == "query", read
        assert "persona" in params["persona"]["description"], read
    for one in ("/v1/journeys/{contact}", "/v1/accounts/{account}"):
        assert "persona=" in spec["paths"][one]["get"]["description"], one
