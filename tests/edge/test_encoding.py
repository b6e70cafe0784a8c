"""A compressed body must be exactly one complete stream."""

from __future__ import annotations

import gzip
import uuid
import zlib

import orjson

from tests.conftest import Server


def body() -> bytes:
    return orjson.dumps({"batch": [{"type": "track", "event": "Gz", "anonymousId": f"gz-{uuid.uuid4()}"}]})


def test_complete_gzip_and_deflate_are_accepted(server: Server) -> None:
    r = server.post("/v1/batch", gzip.compress(body()), headers={"content-encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    r = server.post("/v1/batch", zlib.compress(body()), headers={"content-encoding": "deflate"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text


def test_trailing_garbage_after_gzip_or_deflate_is_400(server: Server) -> None:
    for encoding, packed in (("gzip", gzip.compress(body())), ("deflate", zlib.compress(body()))):
        r = server.post("/v1/batch", packed + b"garbage", headers={"content-encoding": encoding})
        assert r.status_code == 400, (encoding, r.text)
        assert "after the end" in r.json()["error"]


def test_truncated_gzip_is_400(server: Server) -> None:
    packed = gzip.compress(body())
    r = server.post("/v1/batch", packed[:-6], headers={"content-encoding": "gzip"})
    assert r.status_code == 400, r.text
