"""RDAP (the successor of whois, JSON over HTTPS): the domain's registration date.

Asked through the same guarded fetcher as websites (rdap.org answers with a redirect to the
registry's own RDAP service, and every hop is checked); robots.txt does not apply to an API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import orjson

from enrich.companies.errors import SourceFailed
from enrich.companies.fetch import Fetcher

_MAX_BYTES = 256 * 1024


def registration_date(answer: object) -> datetime | None:
    """The ``registration`` event of an RDAP domain answer, or None."""
    events = answer.get("events") if isinstance(answer, dict) else None
    for ev in events if isinstance(events, list) else []:
        if isinstance(ev, dict) and ev.get("eventAction") == "registration" and isinstance(ev.get("eventDate"), str):
            try:
                when = datetime.fromisoformat(ev["eventDate"].replace("Z", "+00:00"))
            except ValueError:
                continue
            return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return None


async def rdap_registered(fetcher: Fetcher, base_url: str, domain: str) -> tuple[datetime | None, str]:
    """(registration date or None, the URL asked). NotFound when the registry does not know it."""
    url = base_url.rstrip("/") + "/domain/" + quote(domain, safe="")
    got = await fetcher.get(url, accept="application/rdap+json, application/json", robots=False, max_bytes=_MAX_BYTES)
    try:
        answer = orjson.loads(got.body)
    except orjson.JSONDecodeError as exc:
        raise SourceFailed(f"{url}: not JSON") from exc
    return registration_date(answer), url


__all__ = ["rdap_registered", "registration_date"]
