"""Events without analytics consent: kept in full, counted in ``consent_aggregates``, or dropped, by
the site's rule (``split_by_consent``, pure); the aggregate rows on real storage (chDB and a
ClickHouse server) through ``Storage.insert``, summed by the table's engine."""

from __future__ import annotations

from typing import Any

import pytest

from journey_builder import privacy
from journey_builder.privacy import ConsentPolicies, ConsentPolicy, split_by_consent
from schemas import EnrichedEvent, RawBatch, Site, unfold
from tests.journeys.conftest import T0, Journey, enricher
from trailmark.errors import ConfigError
from trailmark.settings import PrivacySettings
from trailmark.storage.base import Storage

GRANTED = [1, False, True]  # trailmark.js: opted in, no DNT/GPC, ids stored
DENIED = [0, False, True]  # opted out (a tracker that still sends, or another SDK)
NO_CHOICE = [None, False, True]
GPC = [None, True, True]
SEGMENT_NO_ANALYTICS = {"categoryPreferences": {"Advertising": True, "Analytics": False}}
SEGMENT_ANALYTICS = {"categoryPreferences": {"analytics": True, "Advertising": False}}
SEGMENT_ALL_REFUSED = {"categoryPreferences": {"Analytics": False, "Advertising": False}}


def site(site_id: str, **rules: Any) -> Site:
    return {"site_id": site_id, "write_key": "w", "read_key": "r", "origins": ["*"], **rules}  # type: ignore[typeddict-item]


def enriched(consent: object, anon: str = "v-1", path: str = "/pricing") -> EnrichedEvent:
    """One page view through unfold and the real Enricher, as the builder receives it."""
    raw = Journey.event("page", anon, 0, path=path, query="?utm_source=news&utm_medium=email&email=x@y.z")
    if consent is not None:
        raw["context"]["consent"] = consent
    batch: RawBatch = {
        "v": 1,
        "site_id": "s1",
        "received_at": T0.isoformat(),
        "ip": "81.2.69.142",
        "body": {"batch": [raw]},
    }
    [ev] = [enricher().enrich(e, None) for e in unfold(batch)]
    return ev


def test_which_events_lack_analytics_consent() -> None:
    strict = ConsentPolicy("aggregate", honour_dnt=True)
    lax = ConsentPolicy("aggregate", honour_dnt=False)
    for context, lacks in (
        ({"consent": DENIED}, True),
        ({"consent": GRANTED}, False),
        ({"consent": NO_CHOICE}, False),  # no choice yet is not a refusal (require-consent sends nothing)
        ({}, False),  # a server-side SDK says nothing about consent
        ({"consent": SEGMENT_NO_ANALYTICS}, True),  # categories chosen, analytics not among them
        ({"consent": SEGMENT_ANALYTICS}, False),  # case-insensitive
        ({"consent": SEGMENT_ALL_REFUSED}, True),
    ):
        assert strict.lacks_analytics_consent(context) is lacks, context
    assert strict.lacks_analytics_consent({"consent": GPC}) and not lax.lacks_analytics_consent({"consent": GPC})
    measurement = ConsentPolicy("aggregate", analytics_categories=frozenset({"measurement"}))
    assert measurement.lacks_analytics_consent({"consent": SEGMENT_ANALYTICS})


def test_policies_come_from_the_settings_and_each_sites_keys_json_entry() -> None:
    settings = PrivacySettings(no_consent="drop", honour_dnt=True, analytics_categories=["Analytics", "stats"])
    policies = ConsentPolicies.from_sites([site("a"), site("b", no_consent="aggregate", honour_dnt=False)], settings)
    assert policies.of("a") == ConsentPolicy("drop", True, frozenset({"analytics", "stats"}))
    assert policies.of("b") == ConsentPolicy("aggregate", False, frozenset({"analytics", "stats"}))
    assert policies.of("unknown").mode == "drop"  # a site added later: the settings' rule
    assert ConsentPolicies.from_sites([site("a")], PrivacySettings()).all_full()  # the default keeps everything
    with pytest.raises(ConfigError, match="no_consent must be one of full, aggregate, drop, not 'agregate'"):
        ConsentPolicies.from_sites([site("a", no_consent="agregate")], PrivacySettings())


def test_full_keeps_everything_aggregate_counts_and_drop_discards() -> None:
    batch = [
        enriched(GRANTED, "v-yes"),
        enriched(DENIED, "v-no", path="/pricing"),
        enriched(DENIED, "v-no2", path="/pricing"),
        enriched(SEGMENT_NO_ANALYTICS, "v-seg", path="/docs"),
        enriched(GPC, "v-gpc"),
        enriched(None, "v-server"),
    ]
    full = split_by_consent(batch, ConsentPolicies())
    assert full == (batch, [], 0, 0)

    split = split_by_consent(batch, ConsentPolicies(ConsentPolicy("aggregate", honour_dnt=True)))
    assert [e["anonymous_id"] for e in split.kept] == ["v-yes", "v-server"]
    assert (split.aggregated, split.dropped) == (4, 0)
    assert sum(r["events"] for r in split.aggregates) == 4
    by_path = {r["page_path"]: r["events"] for r in split.aggregates}
    assert by_path == {"/docs": 1, "/pricing": 3}  # two opted-out visitors and GPC on /pricing: one row
    [pricing] = [r for r in split.aggregates if r["page_path"] == "/pricing"]
    assert pricing == {
        "site_id": "s1",
        "day": "2026-11-02",
        "type": "page",
        "event": "",
        "page_path": "/pricing",
        "channel": "Email",
        "source": "news",
        "medium": "email",
        "campaign": "",
        "country": batch[1]["geo_country"],
        "device_type": "desktop",
        "browser": "Chrome",
        "events": 3,
    }
    text = repr(split.aggregates)
    assert not any(n in text for n in ("v-no", "v-seg", "v-gpc", "x@y.z", "81.2.69", "utm_source"))  # nothing personal

    dropped = split_by_consent(batch, ConsentPolicies(ConsentPolicy("drop")))  # GPC not honoured here
    assert [e["anonymous_id"] for e in dropped.kept] == ["v-yes", "v-gpc", "v-server"]
    assert (dropped.aggregates, dropped.aggregated, dropped.dropped) == ([], 0, 3)


def test_each_site_follows_its_own_rule() -> None:
    a, b = enriched(DENIED, "v-a"), enriched(DENIED, "v-b")
    b = {**b, "site_id": "s2"}  # type: ignore[assignment]
    policies = ConsentPolicies.from_sites([site("s1", no_consent="aggregate"), site("s2")], PrivacySettings())
    split = split_by_consent([a, b], policies)
    assert split.kept == [b] and split.aggregated == 1 and split.aggregates[0]["site_id"] == "s1"


def test_aggregate_rows_are_stored_and_summed(storage: Storage) -> None:
    policies = ConsentPolicies(ConsentPolicy("aggregate"))
    first = split_by_consent([enriched(DENIED, f"v-{i}") for i in range(3)], policies)
    second = split_by_consent([enriched(DENIED, "v-9"), enriched(DENIED, "v-8", path="/docs")], policies)
    for split in (first, second):  # two batches: two inserts of the same key
        storage.insert(privacy.AGGREGATE_TABLE, split.aggregates)
    db = storage.database
    summed = storage.query(
        f"SELECT day, page_path, sum(events) AS n FROM {db}.consent_aggregates"
        " GROUP BY day, page_path ORDER BY page_path"
    )
    assert [(str(r["day"]), r["page_path"], int(r["n"])) for r in summed] == [
        ("2026-11-02", "/docs", 1),
        ("2026-11-02", "/pricing", 4),
    ]
    storage.execute(f"OPTIMIZE TABLE {db}.consent_aggregates FINAL")  # the engine adds one key's rows up
    rows = storage.query(f"SELECT page_path, events FROM {db}.consent_aggregates ORDER BY page_path")
    assert [(r["page_path"], int(r["events"])) for r in rows] == [("/docs", 1), ("/pricing", 4)]
    # nothing about a visitor: no identifier columns, so erasure and retention leave the table alone
    assert privacy.AGGREGATE_TABLE not in {t for t, _ in privacy.erasable_tables(storage)}
    assert privacy.AGGREGATE_TABLE not in privacy.RETENTION_TABLES
