"""A ``trailmark up`` with the edge's protections set tight, for the tests that need them: small rate
limits (nothing exempt, the client IP taken from X-Forwarded-For so each test is its own client),
a metrics token, and a first site that allows one origin."""

from __future__ import annotations

import os
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import Server
from trailmark.keys import new_site

METRICS_TOKEN = "metrics-secret"
SHOP = "https://shop.example"
LIMITS = {
    "IP_PER_S": "0.2",
    "IP_BURST": "10",
    "KEY_PER_S": "0.2",
    "KEY_BURST": "30",
    "BAD_KEY_PER_S": "0.05",
    "BAD_KEY_BURST": "5",
}


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("tight") / "data"
    data.mkdir()
    sites = [new_site("shop", [SHOP]), new_site("other")]
    fd = os.open(data / "keys.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps({"sites": sites}))
    env = {
        "TRAILMARK_METRICS_TOKEN": METRICS_TOKEN,
        "TRAILMARK_COLLECTOR__TRUST_FORWARDED_FOR": "true",
        "TRAILMARK_COLLECTOR__RATE_LIMIT_EXEMPT": "[]",
        **{f"TRAILMARK_COLLECTOR__RATE_LIMIT_{k}": v for k, v in LIMITS.items()},
    }
    srv = Server(data, env).start()
    yield srv
    srv.stop()
