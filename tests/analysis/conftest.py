"""The journey-method reads (retention, personas, KPIs, moments, feedback) on small hand-made streams,
fed through the real Enricher and JourneyBuilder (tests/journeys/conftest.py) on chDB and on the
ClickHouse HTTP endpoint."""

from tests.journeys.conftest import journey  # noqa: F401  (fixture)
from tests.storage.backends import clickhouse_endpoint, clickhouse_url, storage  # noqa: F401  (fixtures)
