"""Fixtures: the real broker (tests/kafka) and both storage backends (tests/storage)."""

from tests.kafka.conftest import kafka_bootstrap  # noqa: F401  (fixture)
from tests.storage.backends import clickhouse_endpoint, clickhouse_url, storage  # noqa: F401  (fixtures)
