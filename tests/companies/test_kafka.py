"""On Kafka with the stages as separate processes, on the real broker: the enricher process hands the
domains it wants to the trailmark.lookups topic and the journey builder's process (where the storage
is) looks them up and stores the profiles, in a ClickHouse server (here the chDB-backed HTTP endpoint
of tests/chserver) or in its own chDB."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.chserver import ClickHouseEndpoint, clickhouse_endpoint  # noqa: F401  (fixture)
from tests.companies.sites import Sites
from tests.conftest import CHROME_UA
from tests.kafka.conftest import kafka_bootstrap  # noqa: F401  (fixture)
from tests.kafka.pipeline import Pipeline


@pytest.mark.kafka
@pytest.mark.slow
def test_the_profiles_are_stored_in_the_clickhouse_server(
    sites: Sites,
    kafka_bootstrap: str,  # noqa: F811
    clickhouse_endpoint: ClickHouseEndpoint,  # noqa: F811
    tmp_path: Path,
) -> None:
    database = f"co_{uuid.uuid4().hex[:10]}"
    check_profile(sites, kafka_bootstrap, tmp_path, database, TRAILMARK_CLICKHOUSE_URL=clickhouse_endpoint.url)


@pytest.mark.kafka
@pytest.mark.slow
def test_the_profiles_are_stored_in_the_builders_chdb(
    sites: Sites,
    kafka_bootstrap: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    check_profile(sites, kafka_bootstrap, tmp_path, "trailmark")


def check_profile(sites: Sites, kafka_bootstrap: str, tmp_path: Path, database: str, **extra: str) -> None:  # noqa: F811
    env = {f"TRAILMARK_COMPANIES__{k.upper()}": v if isinstance(v, str) else orjson.dumps(v).decode()
           for k, v in sites.settings_env().items()}  # fmt: skip
    topics = {"TRAILMARK_BUS__TOPIC_LOOKUPS": f"lookups-{uuid.uuid4().hex[:8]}"}  # nothing of other tests
    pipeline = Pipeline(
        tmp_path, kafka_bootstrap, TRAILMARK_STORAGE__DATABASE=database, **env, **topics, **extra
    ).start()  # fmt: skip
    try:
        body = {"batch": [{"type": "identify", "userId": "u-k", "anonymousId": "a-k",
                           "traits": {"email": "kim@acme-micro.example"}}]}  # fmt: skip
        r = httpx.post(
            f"{pipeline.collector.url}/v1/batch",
            content=orjson.dumps(body),
            headers={"content-type": "application/json", "user-agent": CHROME_UA},
            auth=(pipeline.site["write_key"], ""),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 60
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rows:
            rows = pipeline.sql(
                f"SELECT company_name, country, mail_provider, field_sources FROM {database}.contact_companies"
                " WHERE contact_id = 'user:u-k'"
            )
            time.sleep(0.3)
        assert rows, (
            f"no profile\n--- enricher:\n{pipeline.enricher.tail(3000)}\n--- builder:\n{pipeline.journeys.tail(3000)}"
        )
        assert (rows[0]["company_name"], rows[0]["country"], rows[0]["mail_provider"]) == (
            "Micro Data Ltd", "GB", "self-hosted",
        )  # fmt: skip
        assert orjson.loads(str(rows[0]["field_sources"]))["name"] == f"http://acme-micro.example:{sites.port}/"
    finally:
        pipeline.close()
