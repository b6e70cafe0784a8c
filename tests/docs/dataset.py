"""A small, realistic dataset for the SQL docs and the journey map tests (hand-countable).

Six visitors over the last three days:

- Jane, two devices: desktop via a Google Ads click (spring_sale) reads /pricing and /features and
  leaves her email (contact ``email:jane@acme.io``); a day later on her phone she opens the
  newsletter (spring_sale), signs up and identifies as ``u-jane``: both devices become
  ``user:u-jane``. Two hours ago she comes back (Retention) and invites a colleague (Advocacy).
- Bob searches Bing for "customer journey analytics", reads a blog post and /pricing, asks for
  contact and leaves ``bob@globex.com`` (Consideration).
- Eve clicks a LinkedIn ad (abm_q3), requests a demo, leaves ``eve@acme.io`` (Decision).
- Bob and Eve each make a group call: accounts ``globex`` (Globex Corporation) and ``acme`` (Acme Inc).
- Frank (anonymous) clicks a Google ad (spring_sale), signs up, and returns later (Retention).
- Carol (anonymous) bounces from Facebook on a blog post; Dave (anonymous) bounces on / (Awareness).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import CHROME_UA, Server

IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
ANDROID_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)
FIREFOX_MAC_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:132.0) Gecko/20100101 Firefox/132.0"
HOST = "https://shop.example.com"

# stage each contact is in now (the latest one entered) and the stages ever entered
CURRENT_STAGES = {"Awareness": 2, "Consideration": 1, "Decision": 1, "Retention": 1, "Advocacy": 1}
ENTERED_STAGES = {"Awareness": 6, "Consideration": 3, "Decision": 3, "Retention": 2, "Advocacy": 1}


@dataclass
class Dataset:
    now: datetime
    ids: dict[str, str] = field(default_factory=dict)  # visitor name -> anonymousId
    events: int = 0


class _Builder:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def ts(self, hours: float) -> str:
        return (self.now + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")

    def page(
        self, anon: str, path: str, hours: float, query: str = "", referrer: str = "", title: str = ""
    ) -> dict[str, Any]:
        return {
            "type": "page",
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": self.ts(hours),
            "properties": {"path": path, "title": title or path},
            "context": {
                "page": {"url": f"{HOST}{path}{query}", "path": path, "referrer": referrer, "title": title or path},
                "locale": "en-GB",
                "screen": {"width": 1440, "height": 900},
            },
        }

    def track(self, anon: str, name: str, hours: float, **props: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "event": name,
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": self.ts(hours),
            "properties": props,
        }

    def group(self, anon: str, group_id: str, hours: float, **traits: Any) -> dict[str, Any]:
        return {
            "type": "group",
            "groupId": group_id,
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": self.ts(hours),
            "traits": traits,
        }

    def identify(self, anon: str, hours: float, user_id: str = "", **traits: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": self.ts(hours),
            "traits": traits,
        }
        if user_id:
            ev["userId"] = user_id
        return ev


def post_dataset(server: Server) -> Dataset:
    """Post every visitor (one batch per device, with its own user agent) and wait for the pipeline."""
    now = datetime.now(UTC).replace(microsecond=0)
    b = _Builder(now)
    m = 1 / 60  # a minute, in hours
    ids = {
        name: f"{name}-{uuid.uuid4().hex[:8]}"
        for name in ("jane-desktop", "jane-phone", "bob", "eve", "frank", "carol", "dave")
    }
    jd, jp, bob, eve, frank, carol, dave = ids.values()
    devices: list[tuple[str, list[dict[str, Any]]]] = [
        (
            CHROME_UA,
            [
                b.page(
                    jd,
                    "/",
                    -72,
                    "?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&gclid=Cj0KCQ1",
                    "https://www.google.com/",
                    "Trailmark - customer journeys",
                ),
                b.page(jd, "/pricing", -72 + 2 * m, title="Pricing"),
                b.page(jd, "/features", -72 + 4 * m, title="Features"),
                b.identify(jd, -72 + 5 * m, email="jane@acme.io", name="Jane Doe", company="Acme"),
            ],
        ),
        (
            IPHONE_UA,
            [
                b.page(jp, "/", -24, "?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale"),
                b.page(jp, "/signup", -24 + 1 * m, title="Sign up"),
                b.track(jp, "Signed Up", -24 + 6 * m, plan="pro", seats=5),
                b.identify(jp, -24 + 7 * m, user_id="u-jane", email="jane@acme.io", plan="pro"),
                b.page(jp, "/", -2, title="Home"),
                b.track(jp, "Invite Sent", -2 + 1 * m, invitee="sam@acme.io"),
            ],
        ),
        (
            FIREFOX_MAC_UA,
            [
                b.page(
                    bob,
                    "/blog/journey-mapping",
                    -48,
                    referrer="https://www.bing.com/search?q=customer+journey+analytics",
                    title="Journey mapping",
                ),
                b.page(bob, "/pricing", -48 + 3 * m, title="Pricing"),
                b.track(bob, "Contact Requested", -48 + 5 * m, topic="sales"),
                b.identify(bob, -48 + 6 * m, email="bob@globex.com", name="Bob Stone", company="Globex"),
                b.group(
                    bob, "globex", -48 + 7 * m, name="Globex Corporation", website="https://globex.com", employees=800
                ),
            ],
        ),
        (
            ANDROID_UA,
            [
                b.page(
                    eve,
                    "/",
                    -30,
                    "?utm_source=linkedin&utm_medium=paid_social&utm_campaign=abm_q3",
                    "https://www.linkedin.com/",
                ),
                b.page(eve, "/demo", -30 + 2 * m, title="Book a demo"),
                b.track(eve, "Demo Requested", -30 + 3 * m, team_size="11-50"),
                b.identify(eve, -30 + 4 * m, email="eve@acme.io", name="Eve Park"),
                b.group(eve, "acme", -30 + 5 * m, name="Acme Inc", website="acme.io", employees=40),
            ],
        ),
        (
            IPHONE_UA,
            [
                b.page(
                    frank,
                    "/",
                    -10,
                    "?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&gclid=Cj0KCQ2",
                    "https://www.google.com/",
                ),
                b.page(frank, "/pricing", -10 + 1 * m, title="Pricing"),
                b.page(frank, "/signup", -10 + 2 * m, title="Sign up"),
                b.track(frank, "Signed Up", -10 + 4 * m, plan="starter", seats=1),
                b.page(frank, "/", -3, title="Home"),
                b.page(frank, "/docs", -3 + 1 * m, title="Docs"),
            ],
        ),
        (
            CHROME_UA,
            [
                b.page(
                    carol, "/blog/journey-mapping", -20, referrer="https://www.facebook.com/", title="Journey mapping"
                ),
                b.page(dave, "/", -5, title="Home"),
            ],
        ),
    ]
    total = 0
    for ua, events in devices:
        r = server.post(
            "/v1/batch", {"batch": events, "sentAt": datetime.now(UTC).isoformat()}, headers={"user-agent": ua}
        )
        assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text
        total += len(events)
    anon_list = ", ".join(f"'{a}'" for a in ids.values())
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id IN ({anon_list})", total, timeout=60)
    return Dataset(now=now, ids=ids, events=total)
