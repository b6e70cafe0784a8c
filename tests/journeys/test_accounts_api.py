"""Accounts and interests through the real server (issue 14): ``trailmark up`` with two sites, events
posted to the collector, and ``GET /v1/accounts/{id}``, ``/v1/journeys?interest=`` and the journey's
interests read back with each site's read key. Plus the company profile joined in, on chDB."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from journey_builder import accounts
from tests.conftest import CHROME_UA, Server
from tests.journeys.conftest import Journey
from trailmark.keys import new_site
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage

NOW = datetime.now(UTC).replace(microsecond=0)


def ev(kind: str, anon: str, hours_ago: float, path: str = "/", **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "timestamp": (NOW - timedelta(hours=hours_ago)).isoformat(),
        "context": {"page": {"url": f"https://shop.example.com{path}", "path": path}},
        **fields,
    }


class Sites:
    def __init__(self, server: Server, sites: list[dict[str, Any]]) -> None:
        self.server = server
        self.alpha, self.beta = sites

    def post(self, site: dict[str, Any], events: list[dict[str, Any]]) -> None:
        r = httpx.post(
            self.server.url + "/v1/batch",
            auth=(site["write_key"], ""),
            headers={"user-agent": CHROME_UA},
            json={"batch": events, "sentAt": datetime.now(UTC).isoformat()},
            timeout=30,
        )
        assert r.status_code == 200, r.text

    def get(
        self, path: str, site: dict[str, Any] | None = None, key: str = "read_key", **params: Any
    ) -> httpx.Response:
        return httpx.get(
            self.server.url + path,
            params=params,
            headers={"authorization": f"Bearer {(site or self.alpha)[key]}"},
            timeout=30,
        )


def wait(s: Sites, path: str, site: dict[str, Any], done: Any) -> None:
    deadline = time.time() + 60  # a shared machine: the first batch can take a while
    while True:
        r = s.get(path, site)
        if r.status_code == 200 and done(r.json()):
            return
        assert time.time() < deadline, f"events never reached {path}: {r.text}\n{s.server.tail()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    data = tmp_path_factory.mktemp("accounts") / "data"
    data.mkdir(parents=True)
    both = [new_site("alpha"), new_site("beta")]
    (data / "keys.json").write_bytes(orjson.dumps({"sites": both}))
    (data / "keys.json").chmod(0o600)
    srv = Server(Path(data), env={"TRAILMARK_JOURNEYS__INTEREST_HALF_LIFE_DAYS": "10"}).start()
    try:
        s = Sites(srv, [dict(x) for x in both])
        # Ann: laptop and phone, acme.io, in group g-acme; Eve: acme.io by email only, on /demo
        # (Decision); Bob: a free-mail address, in g-acme by a group call; Carl: another company.
        s.post(
            s.alpha,
            [
                ev("page", "ann-laptop", 72, "/pricing"),
                ev("identify", "ann-laptop", 71.9, userId="u-ann", traits={"email": "ann@acme.io", "name": "Ann Lee"}),
                ev(
                    "group",
                    "ann-laptop",
                    71.8,
                    userId="u-ann",
                    groupId="g-acme",
                    traits={"name": "Acme Inc", "website": "https://acme.io", "plan": "pro"},
                ),
                ev("page", "ann-phone", 48, "/blog/shoes"),
                ev("identify", "ann-phone", 47.9, userId="u-ann"),
                ev("page", "eve", 24, "/demo"),
                ev("identify", "eve", 23.9, traits={"email": "eve@acme.io"}),
                ev("page", "bob", 20, "/"),
                ev("identify", "bob", 19.9, userId="u-bob", traits={"email": "bob@gmail.com"}),
                ev("group", "bob", 19.8, userId="u-bob", groupId="g-acme", traits={}),
                ev("page", "carl", 10, "/cats/tabby"),
                ev("identify", "carl", 9.9, traits={"email": "carl@globex.com"}),
            ],
        )
        wait(
            s, "/v1/accounts/domain:acme.io", s.alpha, lambda a: len(a["contacts"]) == 2 and len(a["touchpoints"]) >= 6
        )
        # beta's events after alpha's are stored: one builder batch holding the same contact id for
        # two sites keeps only one of them (journey_builder/builder.py keys its contact rows by id)
        s.post(
            s.beta,
            [
                ev("page", "beta-1", 5, "/blog/shoes"),
                ev("identify", "beta-1", 4.9, userId="u-ann", traits={"email": "ann@acme.io"}),
                ev("group", "beta-1", 4.8, userId="u-ann", groupId="g-beta", traits={"name": "Beta Co"}),
            ],
        )
        wait(s, "/v1/accounts/g-beta", s.beta, lambda a: len(a["contacts"]) == 1)
        yield s
    finally:
        srv.stop()


def test_a_domain_account_has_the_contacts_of_that_company(sites: Sites) -> None:
    r = sites.get("/v1/accounts/domain:acme.io")
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["account_id"], a["source"]) == ("domain:acme.io", "domain")
    by_id = {c["contact_id"]: c for c in a["contacts"]}
    # Bob (gmail.com) and Carl (globex.com) are not in it; Ann counts once for both her devices
    assert set(by_id) == {"user:u-ann", "email:eve@acme.io"}
    assert (by_id["user:u-ann"]["devices"], by_id["user:u-ann"]["sessions"]) == (2, 2)
    assert by_id["user:u-ann"]["email"] == "ann@acme.io" and by_id["user:u-ann"]["first_name"] == "Ann"
    assert (by_id["user:u-ann"]["stage"], by_id["email:eve@acme.io"]["stage"]) == ("Consideration", "Decision")
    assert a["stage"] == "Decision"  # the furthest stage of its contacts
    assert a["profile"]["domain"] == "acme.io" and a["profile"]["name"] == "Acme"
    assert a["related_accounts"] == ["g-acme"]  # the group whose website is acme.io
    # the combined journey: both contacts' touchpoints, every device, in time order
    tps = a["touchpoints"]
    assert [t["timestamp"] for t in tps] == sorted(t["timestamp"] for t in tps)
    assert {t["contact_id"] for t in tps} == {"user:u-ann", "email:eve@acme.io"}
    assert {t["anonymous_id"] for t in tps} == {"ann-laptop", "ann-phone", "eve"}
    assert [t["page_path"] for t in tps if t["kind"] == "session_start"] == ["/pricing", "/blog/shoes", "/demo"]
    assert a["touchpoints_truncated"] is False
    assert ("section", "blog") in {(i["kind"], i["value"]) for i in a["interests"]}
    # a bare domain finds the domain account
    assert sites.get("/v1/accounts/acme.io").json()["account_id"] == "domain:acme.io"


def test_a_group_account_has_its_linked_contacts(sites: Sites) -> None:
    a = sites.get("/v1/accounts/g-acme").json()
    assert (a["account_id"], a["source"]) == ("g-acme", "group")
    assert {c["contact_id"] for c in a["contacts"]} == {"user:u-ann", "user:u-bob"}
    assert a["profile"]["name"] == "Acme Inc" and a["profile"]["traits"]["plan"] == "pro"
    assert a["profile"]["domain"] == "acme.io"
    assert a["related_accounts"] == ["domain:acme.io"]
    assert a["stage"] == "Consideration"
    assert {t["anonymous_id"] for t in a["touchpoints"]} == {"ann-laptop", "ann-phone", "bob"}


def test_account_members_view_lists_both_kinds(sites: Sites) -> None:
    r = httpx.post(
        sites.server.url + "/v1/sql",
        json={"query": "SELECT account_id, source, contact_id FROM account_members ORDER BY account_id, contact_id"},
        headers={"authorization": f"Bearer {sites.alpha['read_key']}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert [(x["account_id"], x["source"], x["contact_id"]) for x in r.json()["rows"]] == [
        ("domain:acme.io", "domain", "email:eve@acme.io"),
        ("domain:acme.io", "domain", "user:u-ann"),
        ("domain:globex.com", "domain", "email:carl@globex.com"),
        ("g-acme", "group", "user:u-ann"),
        ("g-acme", "group", "user:u-bob"),
    ]


def test_another_sites_key_cannot_see_the_account(sites: Sites) -> None:
    r = sites.get("/v1/accounts/g-acme", sites.beta)
    assert r.status_code == 404, r.text
    # beta has its own acme.io contact: beta's domain account holds it alone, none of alpha's rows
    beta_acme = sites.get("/v1/accounts/domain:acme.io", sites.beta).json()
    assert [c["contact_id"] for c in beta_acme["contacts"]] == ["user:u-ann"]
    assert {t["anonymous_id"] for t in beta_acme["touchpoints"]} == {"beta-1"}
    assert beta_acme["related_accounts"] == [] and beta_acme["stage"] == "Awareness"
    # beta's own account, with beta's own Ann (same user id on another site): alpha sees nothing of it
    beta = sites.get("/v1/accounts/g-beta", sites.beta).json()
    assert [c["contact_id"] for c in beta["contacts"]] == ["user:u-ann"]
    assert {t["anonymous_id"] for t in beta["touchpoints"]} == {"beta-1"}
    assert sites.get("/v1/accounts/g-beta").status_code == 404
    assert sites.get("/v1/accounts/nobody.example").status_code == 404
    # only a read key reads
    assert sites.get("/v1/accounts/g-acme", key="write_key").status_code in (401, 403)


def test_journeys_show_and_filter_by_interest(sites: Sites) -> None:
    r = sites.get("/v1/journeys", interest="blog")
    assert r.status_code == 200, r.text
    found = {c["contact_id"]: c for c in r.json()["contacts"]}
    assert set(found) == {"user:u-ann"}  # Carl read /cats
    ann = found["user:u-ann"]["interests"]
    assert {(i["kind"], i["value"]) for i in ann} == {("section", "blog"), ("section", "pricing")}
    assert sites.get("/v1/journeys", interest="section:pricing").json()["contacts"][0]["contact_id"] == "user:u-ann"
    assert sites.get("/v1/journeys", interest="cats").json()["contacts"][0]["contact_id"] == "email:carl@globex.com"
    assert sites.get("/v1/journeys", interest="nothing-like-it").json()["contacts"] == []
    # beta's visitor read /blog too, but alpha's filter never returns it, and the other way round
    beta = sites.get("/v1/journeys", sites.beta, interest="blog").json()["contacts"]
    assert [c["contact_id"] for c in beta] == ["user:u-ann"] and [i["value"] for i in beta[0]["interests"]] == ["blog"]
    # one contact's journey carries its interests, summed over both devices
    j = sites.get("/v1/journeys/u-ann").json()
    assert {(i["kind"], i["value"]) for i in j["interests"]} == {("section", "blog"), ("section", "pricing")}
    # ~2 and ~3 days old at the server's half-life setting, 10 days (the default is 30)
    scores = {i["value"]: i["score"] for i in j["interests"]}
    assert scores["blog"] == pytest.approx(2 ** (-2 / 10), abs=0.005)
    assert scores["pricing"] == pytest.approx(2 ** (-3 / 10), abs=0.005)


def test_the_company_profile_is_part_of_the_account(storage: Storage) -> None:
    j = Journey(storage)
    j.send(j.event("identify", "dora", 0, user_id="u-dora", traits={"email": "dora@initech.com"}))
    settings = JourneySettings()
    a = accounts.account(storage, "s1", "domain:initech.com", settings)
    assert a is not None and a["profile"]["company"] is None  # not looked up yet
    storage.insert(
        "company_profiles_data",
        [
            {
                "site_id": "s1",
                "domain": "initech.com",
                "status": "ok",
                "name": "Initech LLC",
                "country": "US",
                "field_sources": '{"name": "https://initech.com/"}',
                "fetched_at": "2026-11-02 09:00:00.000",
                "version": 1,
            },
            {
                "site_id": "other",
                "domain": "initech.com",
                "status": "ok",
                "name": "Not this site's",
                "country": "",
                "field_sources": "{}",
                "fetched_at": "2026-11-02 09:00:00.000",
                "version": 1,
            },
        ],
    )
    a = accounts.account(storage, "s1", "domain:initech.com", settings)
    assert a is not None
    company = a["profile"]["company"]
    assert (company["name"], company["country"], company["status"]) == ("Initech LLC", "US", "ok")
    assert company["field_sources"] == {"name": "https://initech.com/"}
    assert [c["contact_id"] for c in a["contacts"]] == ["user:u-dora"]
    assert accounts.account(storage, "other", "domain:initech.com", settings) is None
