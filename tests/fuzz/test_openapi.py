"""Schemathesis against the OpenAPI schema of a real ``trailmark up``: every operation, with the
right key, a key of the other kind, an unknown key and none. No answer may be a 5xx, and an answer
whose status the schema declares must match the schema. Examples are bounded and derandomized, so
the run is the same on every machine and fits CI.

The operations are listed at collection from the app's own schema (no server needed then); each
test loads ``/openapi.json`` from the running server and fuzzes that operation.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from schemas import Site
from tests.conftest import Server
from trailmark.app import create_app
from trailmark.settings import Settings

CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance]
# the right key with valid and with schema-violating input; then wrong keys, fewer examples
KINDS = ("right", "right, invalid input", "swapped", "unknown", "none")
EXAMPLES = {"right": 30, "right, invalid input": 20, "swapped": 5, "unknown": 5, "none": 5}


def _spec() -> dict[str, Any]:
    site: Site = {"site_id": "s", "write_key": "wk_x", "read_key": "rk_x", "origins": []}
    with warnings.catch_warnings():  # FastAPI warns that GET and HEAD /map share an operation id
        warnings.simplefilter("ignore", UserWarning)
        spec: dict[str, Any] = create_app(Settings(data_dir=Path("/nonexistent")), [site]).openapi()
    return spec


def cases() -> list[tuple[str, str, str]]:
    """(method, path, key kind) for every operation the app documents; invalid input only where
    the schema gives something to violate (a query parameter or a body)."""
    out = []
    for path, ops in _spec()["paths"].items():
        for method, op in ops.items():
            negatable = "requestBody" in op or any(p["in"] != "path" for p in op.get("parameters", []))
            out += [(method.upper(), path, k) for k in KINDS if negatable or "invalid" not in k]
    return sorted(out)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("fuzz") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(fuzzed: Server) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")


def is_write(method: str, path: str) -> bool:
    return method == "POST" and path.startswith("/v1/") and path != "/v1/sql" and not path.startswith("/v1/admin/")


def auth(server: Server, method: str, path: str, kind: str) -> dict[str, str]:
    """The Authorization header for a key of ``kind``: the operation's own key, the other kind,
    an unknown one, or none."""
    site = server.site
    own, other = ("write_key", "read_key") if is_write(method, path) else ("read_key", "write_key")
    if path.startswith(("/v1/admin/", "/v1/contacts", "/v1/erasures")):  # the admin key's routes
        own, other = "admin_key", "read_key"
    key = {
        "right": site[own],
        "right, invalid input": site[own],
        "swapped": site[other],
        "unknown": site[own][:3] + "x" * 24,
        "none": "",
    }[kind]
    if not key:
        return {}
    if is_write(method, path):
        return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("method", "path", "kind"), cases())
def test_no_5xx_and_answers_match_the_schema(api: Any, fuzzed: Server, method: str, path: str, kind: str) -> None:
    operation = api[path][method]
    headers = auth(fuzzed, method, path, kind)
    mode = schemathesis.GenerationMode.NEGATIVE if "invalid" in kind else schemathesis.GenerationMode.POSITIVE

    @settings(
        max_examples=EXAMPLES[kind],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        if not kind.startswith("right") and path.startswith("/v1/"):
            # refused before any data: never a 2xx (an invalid request may be refused as such first)
            assert response.status_code in (400, 401, 403, 413, 429), (
                case.path,
                response.status_code,
                response.text[:300],
            )

    fuzz()
