"""Enrichment settings: every enrichment can be switched off; data files are local paths only."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class EnrichSettings(BaseModel):
    user_agent: bool = True
    bots: bool = True
    referrer: bool = True
    campaign: bool = True
    geo: bool = True
    contact: bool = True
    geo_db: Path | None = None  # a MaxMind-format .mmdb (GeoLite2 / DB-IP lite) the user already has
