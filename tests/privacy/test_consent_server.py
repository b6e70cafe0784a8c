"""A site that keeps events without analytics consent only as aggregates, on a real ``trailmark up``:
opted-out visitors and GPC (honoured by the site) become counts in consent_aggregates and nothing
else; a consenting visitor's events are stored as always."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Server
from tests.privacy.test_server import dump_tables, ev, mentions

pytestmark = pytest.mark.slow


def with_consent(event: dict[str, Any], consent: object) -> dict[str, Any]:
    event["context"]["consent"] = consent
    return event


def test_a_site_in_aggregate_mode_stores_only_counts_of_events_without_consent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Server(data).start().stop()  # writes keys.json
    keys = orjson.loads((data / "keys.json").read_bytes())
    keys["sites"][0].update({"no_consent": "aggregate", "honour_dnt": True})
    (data / "keys.json").write_bytes(orjson.dumps(keys))
    server = Server(data).start()
    try:
        r = server.post(
            "/v1/batch",
            {
                "batch": [
                    with_consent(ev("page", "v-yes", 0), [1, False, True]),
                    with_consent(ev("page", "v-no", 1), [0, False, True]),
                    with_consent(ev("page", "v-no", 2), [0, False, True]),
                    with_consent(ev("identify", "v-no", 3, userId="u-no", traits={"email": "no@x.io"}), [0, 0, 1]),
                    with_consent(ev("page", "v-gpc", 4), [None, True, True]),
                    ev("page", "v-server", 5),  # no consent information: stored
                ]
            },
        )
        assert r.status_code == 200 and r.json()["accepted"] == 6, r.text
        server.wait_for("SELECT sum(events) FROM trailmark.consent_aggregates", 4)
        server.wait_for("SELECT count() FROM trailmark.events", 2)
        stored = server.sql("SELECT anonymous_id FROM trailmark.events ORDER BY anonymous_id")
        assert [row["anonymous_id"] for row in stored] == ["v-server", "v-yes"]
        rows = server.sql(
            "SELECT type, page_path, sum(events) AS n FROM trailmark.consent_aggregates"
            " GROUP BY type, page_path ORDER BY type, page_path"
        )
        assert [(row["type"], row["page_path"], int(row["n"])) for row in rows] == [
            ("identify", "/p3", 1),
            ("page", "/p1", 1),
            ("page", "/p2", 1),
            ("page", "/p4", 1),
        ]
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'reason="no_consent_aggregated"' in metrics, metrics[-2000:]
    finally:
        server.stop()
    tables = dump_tables(data)
    assert mentions(tables, ("v-no", "u-no", "no@x.io", "v-gpc")) == {}  # no table names them
    assert mentions(tables, ("v-yes",)).keys() >= {"events", "sessions_data"}
