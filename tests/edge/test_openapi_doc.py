"""The OpenAPI document describes what the server does: the collector's bodies, its answers, 400 for
invalid requests (never FastAPI's 422), no internal parameters, one operation id per operation."""

from __future__ import annotations

import httpx

from tests.conftest import Server


def test_openapi_documents_the_collector_as_it_behaves(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    batch = spec["paths"]["/v1/batch"]["post"]
    assert "IncomingBatch" in str(batch["requestBody"])
    assert {"200", "400", "401", "413", "429"} <= set(batch["responses"])
    for kind in ("track", "page", "identify", "alias", "group", "screen"):
        op = spec["paths"][f"/v1/{kind}"]["post"]
        assert "IncomingEvent" in str(op["requestBody"]), kind
        assert not op.get("parameters"), (kind, op.get("parameters"))  # no internal `_type`
    codes = {code for ops in spec["paths"].values() for op in ops.values() for code in op["responses"]}
    assert "422" not in codes
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert "head" not in spec["paths"]["/map"]
    assert httpx.head(server.url + "/map", timeout=30).status_code == 200


def test_an_invalid_read_request_is_400_as_documented(server: Server) -> None:
    r = server.read("/v1/journeys", params={"limit": "many"})
    assert r.status_code == 400 and r.json()["error"] == "invalid request"
