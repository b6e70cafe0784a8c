"""trailmark: website behaviour tracking and customer journeys.

This package is the composition root: settings, the event bus and storage interfaces, the CLI, and
the runtime that wires the stages (ingest, enrich, journey_builder) together.
"""

__version__ = "0.1.0"
