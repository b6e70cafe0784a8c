"""The committed tracker script (ingest/static/t.js): size budget, contract markers, freshness; the
click-map overlay (journey_builder/static/overlay.js) is built beside it and never inside it."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACKER = ROOT / "ingest" / "static" / "t.js"
OVERLAY = ROOT / "journey_builder" / "static" / "overlay.js"
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
        "$click", "$form_submit", "$rage_click", "$error", "$engagement", "nth-of-type", "scrollWidth",
        "pushState", "replaceState", "popstate", "hashchange", "unhandledrejection",
        "tm_aid", "tm_consent", "gclid", "li_fat_id", "trailmark.js",
    ):  # fmt: skip
        assert marker in js, f"{marker!r} missing from t.js"


def test_the_overlay_is_not_in_the_tracker() -> None:
    js = _source().decode()
    assert "/v1/clicks" not in js and "trailmark.overlayKey" not in js
    assert "/v1/clicks" in OVERLAY.read_text()


def test_built_files_are_up_to_date(tmp_path: Path) -> None:
    node = shutil.which("node")
    modules = ROOT / "tracker_js" / "node_modules"
    if node is None or not ((modules / "esbuild").exists() and (modules / "terser").exists()):
        pytest.skip("needs node and `npm ci --prefix tracker_js`")
    out, overlay = tmp_path / "t.js", tmp_path / "overlay.js"
    build = [node, str(ROOT / "tracker_js" / "build.mjs"), str(out), str(overlay)]
    subprocess.run(build, check=True, capture_output=True)
    assert out.read_bytes() == _source(), "ingest/static/t.js is stale: run `node tracker_js/build.mjs`"
    assert overlay.read_bytes() == OVERLAY.read_bytes(), "overlay.js is stale: run `node tracker_js/build.mjs`"
