"""The journey map's interests and account view (issue 14) in headless Chromium, on the docs dataset:
a contact shows its interests and links to its accounts; an account shows its stage, its contacts and
their combined journey, as the read API gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.docs.dataset import Dataset
from tests.map.test_map_page import browser, check_screenshot, open_map, page, srv  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_a_contact_shows_its_interests_and_accounts(srv: tuple[Server, Dataset], page: Any) -> None:  # noqa: F811
    server, _ = srv
    open_map(page, f"{server.url}/map?key={server.site['read_key']}&contact=u-jane")
    interests = server.read("/v1/journeys/u-jane").json()["interests"]
    assert ("section", "pricing") in {(i["kind"], i["value"]) for i in interests}
    shown = page.locator("#profile .chip.interest")
    assert shown.count() == len(interests)
    assert [(shown.nth(i).get_attribute("data-kind"), shown.nth(i).get_attribute("data-value")) for i in range(2)] == [
        (i["kind"], i["value"]) for i in interests[:2]
    ]
    assert page.get_attribute("#profile .account-link", "data-account") == "domain:acme.io"
    assert not page.problems, page.problems


def test_an_account_shows_its_contacts_stage_and_journey(
    srv: tuple[Server, Dataset],  # noqa: F811
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, _ = srv
    account = server.read("/v1/accounts/domain:acme.io").json()
    open_map(page, f"{server.url}/map?key={server.site['read_key']}&account=domain:acme.io")
    assert page.get_attribute("[data-stage-now]", "data-stage-now") == account["stage"] == "Advocacy"
    assert page.get_attribute("[data-contacts]", "data-contacts") == "2"
    rows = page.locator("#account-contacts tbody tr")
    assert {rows.nth(i).get_attribute("data-contact") for i in range(rows.count())} == {
        "user:u-jane",
        "email:eve@acme.io",
    }
    journey = page.locator("#account-journey tbody tr")
    assert journey.count() == len(account["touchpoints"]) >= 5
    assert {journey.nth(i).get_attribute("data-contact") for i in range(journey.count())} == {
        "user:u-jane",
        "email:eve@acme.io",
    }
    assert page.locator("#account-profile .chip.interest").count() == len(account["interests"]) > 0
    assert page.get_attribute("#account-profile .account-link", "data-account") == "acme"  # the group call's account
    check_screenshot(page, tmp_path / "map-account.png")
    # the group account, one click away
    page.click("#account-profile .account-link")
    page.wait_for_url("**account=acme")
    page.wait_for_selector("body[data-state=ready]")
    assert page.text_content("#account-profile h2") == "Acme Inc"
    assert page.get_attribute("#account-profile .account-link", "data-account") == "domain:acme.io"
    assert not page.problems, page.problems


def test_an_unknown_account_says_so(srv: tuple[Server, Dataset], page: Any) -> None:  # noqa: F811
    server, _ = srv
    page.goto(f"{server.url}/map?key={server.site['read_key']}&account=domain:nobody.example")
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert "no account" in page.text_content("#error")
