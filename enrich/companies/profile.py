"""One company's profile as looked up, with the source of every field (its provenance)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from schemas.times import CH_EPOCH, ch_text

TEXT_FIELDS = (
    "name",
    "legal_name",
    "description",
    "logo",
    "icon",
    "language",
    "country",
    "address",
    "founded",
    "employees",
    "linkedin",
    "twitter",
    "github",
    "facebook",
    "youtube",
    "instagram",
    "mail_provider",
)
LIST_FIELDS = ("same_as", "mx", "technologies")
STATUSES = ("ok", "not_found", "refused", "error")


@dataclass
class Profile:
    """Fields found for ``domain``; ``sources[field]`` says where each came from (a URL,
    ``dns:MX <domain>``, ``dns:TXT <domain>``, ``rdap:<url>``)."""

    domain: str
    fields: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    registered_at: datetime | None = None
    outcomes: list[str] = field(default_factory=list)  # each source's status: ok / not_found / ...
    reasons: list[str] = field(default_factory=list)  # "website: robots.txt of ... disallows /"

    def put(self, name: str, value: Any, source: str) -> None:
        """Set a field once (the first source to give it wins)."""
        if value and name not in self.fields:
            self.fields[name] = value
            self.sources[name] = source

    def failed(self, source: str, status: str, reason: str) -> None:
        self.outcomes.append(status)
        self.reasons.append(f"{source}: {reason}"[:500])

    @property
    def status(self) -> str:
        """ok when any source gave a field; else the most telling failure: refused, error, not_found."""
        if self.fields:
            return "ok"
        for status in ("refused", "error"):
            if status in self.outcomes:
                return status
        return "not_found"

    def row(self, site_id: str, fetched_at: datetime) -> dict[str, Any]:
        """The ``company_profiles_data`` row for one site."""
        row: dict[str, Any] = {"site_id": site_id, "domain": self.domain, "status": self.status}
        row["reason"] = "\n".join(self.reasons)[:2000]
        for name in TEXT_FIELDS:
            row[name] = str(self.fields.get(name, ""))
        for name in LIST_FIELDS:
            row[name] = [str(v) for v in self.fields.get(name, [])]
        row["registered_at"] = ch_text(self.registered_at) if self.registered_at else CH_EPOCH
        row["field_sources"] = orjson.dumps(self.sources).decode()
        row["fetched_at"] = ch_text(fetched_at)
        row["version"] = int(fetched_at.timestamp() * 1000)
        return row


__all__ = ["LIST_FIELDS", "STATUSES", "TEXT_FIELDS", "Profile"]
