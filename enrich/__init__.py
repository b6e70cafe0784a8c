"""Enrich stage: RawEvent -> EnrichedEvent (page, referrer, campaign, channel, user agent, geo, contact)."""

from enrich.enricher import Enricher
from enrich.errors import PoisonEvent
from trailmark.settings import EnrichSettings

__all__ = ["Enricher", "EnrichSettings", "PoisonEvent"]
