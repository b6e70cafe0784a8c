"""The committed tracker script (ingest/static/t.js): size budget, contract markers, freshness."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACKER = ROOT / "ingest" / "static" / "t.js"
GZIP_BUDGET = 3000  # bytes, zlib level 9


def _source() -> bytes:
    assert TRACKER.is_file(), "ingest/static/t.js is missing: run `node tracker_js/build.mjs`"
    return TRACKER.read_bytes()


def test_gzipped_size_within_budget() -> None:
    size = len(gzip.compress(_source(), compresslevel=9))
    assert size <= GZIP_BUDGET, f"t.js is {size} bytes gzipped, budget {GZIP_BUDGET}"


def test_processes_the_async_queue_stub() -> None:
    js = _source().decode()
    # reads window.trailmark.q left by the stub, then replaces the stub with the API
    assert re.search(r"\.trailmark\??\.q\b", js), "does not read the queued calls (trailmark.q)"
    assert re.search(r"\.trailmark=", js), "does not install window.trailmark"


def test_speaks_the_collector_contract() -> None:
    js = _source().decode()
    for marker in ("/v1/batch", "sentAt", "writeKey", "keepalive", "sendBeacon", "messageId", "anonymousId"):
        assert marker in js, f"{marker!r} missing from t.js"


def test_includes_the_features() -> None:
    js = _source().decode()
    for marker in (
        "$click", "$form_submit", "$outbound", "$download", "$rage_click", "$error", "$engagement",
        "pushState", "replaceState", "popstate", "hashchange", "unhandledrejection",
        "tm_aid", "tm_consent", "gclid", "li_fat_id", "trailmark.js",
    ):  # fmt: skip
        assert marker in js, f"{marker!r} missing from t.js"


def test_built_file_is_up_to_date(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "tracker_js" / "node_modules" / "esbuild").exists():
        pytest.skip("needs node and `npm ci --prefix tracker_js`")
    out = tmp_path / "t.js"
    subprocess.run([node, str(ROOT / "tracker_js" / "build.mjs"), str(out)], check=True, capture_output=True)
    assert out.read_bytes() == _source(), "ingest/static/t.js is stale: run `node tracker_js/build.mjs`"
