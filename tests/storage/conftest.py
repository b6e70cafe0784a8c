"""Storage tests run on both backends: chDB in-process and a ClickHouse server over HTTP."""

from tests.storage.backends import clickhouse_endpoint, clickhouse_url, storage  # noqa: F401  (fixtures)
