"""Keys are looked up by SHA-256 digest: no table holds a key's text, so no comparison of the
secret itself can leak through its timing how much of a guessed key is right."""

from __future__ import annotations

import hashlib

from ingest.sites import SiteKeys
from trailmark.keys import find_site, index_keys, new_site


def test_write_and_read_keys_are_indexed_by_digest_only() -> None:
    sites = [new_site("a"), new_site("b")]
    keys = SiteKeys.of(sites)
    texts = {s["write_key"] for s in sites} | {s["read_key"] for s in sites}
    for table in (keys.by_write_digest, keys.by_read_digest):
        assert len(table) == 2
        assert all(isinstance(k, bytes) and len(k) == 32 for k in table)
        assert not texts & set(table)  # type: ignore[comparison-overlap]
    assert keys.by_write_key(sites[1]["write_key"]) is sites[1]
    assert keys.by_write_key(sites[1]["read_key"]) is None
    assert keys.other_kind(sites[0]["read_key"]) == "read" and keys.other_kind(sites[0]["write_key"]) is None
    assert keys.other_kind(sites[1]["admin_key"]) == "admin"


def test_find_site_for_read_keys() -> None:
    sites = [new_site("a"), new_site("b")]
    by_read = index_keys(sites, "read_key")
    assert set(by_read) == {hashlib.sha256(s["read_key"].encode()).digest() for s in sites}
    assert find_site(by_read, sites[0]["read_key"]) is sites[0]
    for wrong in (sites[0]["write_key"], sites[0]["read_key"][:-1], "", None, 42, "\udcff"):
        assert find_site(by_read, wrong) is None
