"""Channel grouping in the style of GA4's default channel groups, as ONE ordered rule table.

Each event's touch is described by source, medium, campaign (UTM tags, else derived from the
referrer: search -> ``organic``, social -> ``social``, email -> ``email``, other -> ``referral``),
the source's category (search/social/video/shopping/email) and the ad click id. The first rule that
matches names the channel. Differences from GA4: unmatched traffic is ``Other`` (GA4: Unassigned);
a same-site referrer without tags is ``Internal`` (GA4 would continue the session, which is the
journey builder's job, not an event-level fact).
Reference: Google Analytics Help, "[GA4] Default channel group".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from enrich.urls import CLICK_ID_INFO


class Touch(NamedTuple):
    source: str  # lower-cased utm_source, else the referrer name/host
    medium: str  # lower-cased utm_medium, else derived from the referrer type
    campaign: str  # lower-cased utm_campaign
    category: str  # search | social | video | shopping | email | "" : what the source is
    click_id_type: str  # gclid, msclkid, fbclid, ...
    tagged: bool  # any UTM tag or click id present
    referrer_type: str  # direct | search | social | email | internal | other


_PAID = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_SHOP_CAMPAIGN = re.compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$")
_EMAIL = re.compile(r"email|e-mail|e_mail|e mail|newsletter")
_DISPLAY = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUM = frozenset({"social", "social-network", "social-media", "sm", "social network", "social media"})
_GOOGLE_MS_ADS = frozenset(k for k, c in CLICK_ID_INFO.items() if c.ads == "search")
_SOCIAL_ADS = frozenset(k for k, c in CLICK_ID_INFO.items() if c.ads == "social")
_DISPLAY_ADS = frozenset(k for k, c in CLICK_ID_INFO.items() if c.ads == "display")


def _paid(t: Touch) -> bool:
    return bool(_PAID.match(t.medium))


def _shop(t: Touch) -> bool:
    return t.category == "shopping" or bool(_SHOP_CAMPAIGN.match(t.campaign))


Rule = tuple[str, Callable[[Touch], bool]]

# Order matters: the first match wins (as in GA4).
CHANNEL_RULES: list[Rule] = [
    ("Direct", lambda t: not t.tagged and t.referrer_type == "direct"),
    ("Cross-network", lambda t: "cross-network" in t.campaign),
    ("Paid Shopping", lambda t: _shop(t) and _paid(t)),
    ("Paid Search", lambda t: t.click_id_type in _GOOGLE_MS_ADS or (t.category == "search" and _paid(t))),
    ("Paid Social", lambda t: t.click_id_type in _SOCIAL_ADS or (t.category == "social" and _paid(t))),
    ("Paid Video", lambda t: t.category == "video" and _paid(t)),
    ("Display", lambda t: t.medium in _DISPLAY or t.click_id_type in _DISPLAY_ADS),
    ("Paid Other", _paid),
    ("Organic Shopping", _shop),
    ("Organic Social", lambda t: t.category == "social" or t.medium in _SOCIAL_MEDIUM),
    ("Organic Video", lambda t: t.category == "video" or "video" in t.medium),
    ("Organic Search", lambda t: t.category == "search" or t.medium == "organic"),
    ("Email", lambda t: t.category == "email" or bool(_EMAIL.search(t.source) or _EMAIL.search(t.medium))),
    ("Affiliates", lambda t: t.medium == "affiliate"),
    ("Referral", lambda t: t.medium in ("referral", "app", "link")),
    ("Audio", lambda t: t.medium == "audio"),
    ("SMS", lambda t: t.source == "sms" or t.medium == "sms"),
    (
        "Mobile Push Notifications",
        lambda t: (
            t.medium.endswith("push") or "mobile" in t.medium or "notification" in t.medium or t.source == "firebase"
        ),
    ),
    ("Internal", lambda t: not t.tagged and t.referrer_type == "internal"),
]


def channel_for(t: Touch) -> str:
    for name, rule in CHANNEL_RULES:
        if rule(t):
            return name
    return "Other"
