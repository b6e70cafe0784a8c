"""The real broker's fixture for the Kafka replay test (tests/kafka/conftest.py)."""

from tests.kafka.conftest import kafka_bootstrap  # noqa: F401  (fixture)
