"""Privacy tests share the journey tests' builder fixture (real Enricher + JourneyBuilder, on chDB and
on a ClickHouse server)."""

from tests.journeys.conftest import journey  # noqa: F401  (fixture)
from tests.storage.backends import clickhouse_endpoint, clickhouse_url, storage  # noqa: F401  (fixtures)
