"""One settings tree, read from the environment once (prefix TRAILMARK_) and handed to each stage.

Nested sections use ``__``: ``TRAILMARK_JOURNEYS__SESSION_TIMEOUT_S=900``. ``PORT`` and ``DATA_DIR``
are also accepted unprefixed, as the README promises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Section(BaseModel):
    """A settings section: built once (in the CLI, from the environment), then never changed."""

    model_config = ConfigDict(frozen=True)


class EnrichSettings(Section):
    """Enrichment: every step can be switched off; data files are local paths only."""

    user_agent: bool = True
    bots: bool = True
    referrer: bool = True
    campaign: bool = True
    geo: bool = True
    contact: bool = True
    geo_db: Path | None = None  # a MaxMind-format .mmdb (GeoLite2 / DB-IP lite) the user already has
    # --- added by the enrich stage ---
    page: bool = True  # page_url/host/path/query/title from context.page
    channel: bool = True  # GA4-style channel grouping (needs referrer and/or campaign)
    content_group: bool = True
    # (pattern, group): a glob on the page path (``/blog/*``) or a regex when prefixed ``re:``.
    # The first match wins.
    content_groups: list[tuple[str, str]] = []
    geo_fallback: bool = True  # use the offline database shipped in a PyPI package when geo_db is unset
    geo_asn_db: Path | None = None  # optional separate ASN .mmdb (GeoLite2-ASN); geo_db may carry ASN too
    truncate_ip: bool = True  # IPv4 /24, IPv6 /48 after lookup, unless the site sets keep_full_ip
    email: bool = True  # the contact parts can be switched separately
    phone: bool = True
    names: bool = True
    cache_size: int = 50000  # per-lookup LRU size (UA strings, IPs, referrer hosts)
    # Segment's clock-skew rule (applied when a batch is unfolded): corrections larger than this are
    # ignored, and a time further ahead of receivedAt than this is receivedAt
    max_clock_skew_s: float = 7 * 24 * 3600


class CompaniesSettings(Section):
    """Company profiles from public sources (enrich/companies): the company's own website, DNS and
    RDAP, looked up by domain off the event path. Off by default: README "Company profiles"."""

    enabled: bool = False
    website: bool = True  # https://<domain>/: schema.org, OpenGraph, title, icon, social links
    dns: bool = True  # MX -> mail provider, TXT verification tokens -> technologies
    rdap: bool = True  # the domain's registration date
    concurrency: int = 4  # domains looked up at once
    per_host_interval_s: float = 1.0  # at least this long between two requests to one host
    timeout_s: float = 10.0  # one HTTP request, headers and body together
    max_bytes: int = 1024 * 1024  # a page is read up to this and parsed from what was read
    retries: int = 2  # after a network error, a timeout, 429 or 5xx; backoff doubles from retry_backoff_s
    retry_backoff_s: float = 1.0
    max_redirects: int = 5
    refresh_age_s: float = 30 * 24 * 3600  # a domain fetched more recently is not fetched again
    queue_size: int = 10_000  # domains waiting for the worker; beyond it new ones wait for a later event
    user_agent: str = "trailmark-company-lookup/0.1 (company profiles; respects robots.txt)"
    # tests only: where the website of a domain is ({domain}), the DNS server ("host:port"), the
    # RDAP service, the ports fetched, and networks allowed although not public (e.g. 127.0.0.0/8)
    url_template: str = "https://{domain}/"
    dns_nameserver: str = ""  # empty: the system's resolvers
    dns_timeout_s: float = 5.0
    rdap_base_url: str = "https://rdap.org/"  # rdap.org redirects to the registry's own service
    ports: list[int] = [80, 443]
    allow_private_targets: list[str] = []
    ca_file: Path | None = None  # tests only: trust this CA bundle instead of the system's


class CollectorSettings(Section):
    max_body_bytes: int = 512 * 1024  # as Segment: 500 KB per batch request
    max_batch_events: int = 2500
    # take the client IP from the last X-Forwarded-For entry (the one your proxy added): set it behind
    # a proxy, or every client has the proxy's address (one rate-limit bucket, or exempt on loopback)
    trust_forwarded_for: bool = False
    # Rate limits, token buckets (rate per second, burst); 0 turns one off. Far above what a real
    # tracker sends (a page sends a few batches a minute): they stop floods and key guessing.
    rate_limit_ip_per_s: float = 100.0
    rate_limit_ip_burst: int = 400
    rate_limit_key_per_s: float = 2000.0  # per write key, all clients together
    rate_limit_key_burst: int = 10_000
    # requests with a missing or unknown key, per client IP; once used up, every request of that
    # IP gets 429 until a token is back (so guessing learns nothing)
    rate_limit_bad_key_per_s: float = 1.0
    rate_limit_bad_key_burst: int = 30
    rate_limit_max_tracked: int = 100_000  # buckets kept per limit (bounded memory)
    rate_limit_exempt: list[str] = ["127.0.0.0/8", "::1/128"]  # networks no limit applies to


class BusSettings(Section):
    kind: Literal["embedded", "kafka"] = "embedded"
    topic_raw: str = "trailmark.raw"
    topic_enriched: str = "trailmark.enriched"
    topic_dead_letter: str = "trailmark.dead_letter"
    group_enrich: str = "trailmark-enrich"
    group_journeys: str = "trailmark-journeys"
    group_dead_letters: str = "trailmark-dead-letters"  # copies dead letters into ClickHouse
    # Kafka: company domains an enricher process wants looked up, for the lookup worker that runs
    # beside the journey builder (where the storage is); see README "Company profiles"
    topic_lookups: str = "trailmark.lookups"
    group_lookups: str = "trailmark-lookups"
    # The journey builder waits this long for more records after the first of a batch: fewer,
    # larger batches under load (each batch has fixed lookups and inserts), at most this much latency.
    journeys_linger_ms: int = 100
    partitions: int = 3
    replication: int = 1
    linger_ms: int = 5
    max_batch_bytes: int = 1024 * 1024
    # zstd: aiokafka compresses lz4 at level 9 (high-compression mode), which cost the enricher
    # ~11 us per event more than zstd's default level, for a 7x worse ratio (bench/RESULTS.md)
    compression: Literal["lz4", "zstd", "gzip", "none"] = "zstd"
    request_timeout_s: float = 10.0  # Kafka client request timeout (produce, metadata, commit)
    # Collector on Kafka: while the broker is unreachable, accepted batches go to a local durable
    # spool (SQLite WAL, fsync per commit) and are replayed in order when it returns. Unset spool_dir
    # = <data-dir>/spool. spool=false: answer 503 + Retry-After instead.
    spool: bool = True
    spool_dir: Path | None = None
    spool_after_s: float = 3.0  # a produce not acknowledged within this goes to the spool
    spool_max_bytes: int = 2 * 1024**3  # spool file above this: 503 + Retry-After
    # embedded log: how often the records every consumer group has committed past are deleted
    truncate_interval_s: float = 30.0


class StorageSettings(Section):
    database: str = "trailmark"
    read_sessions: int = 6  # chDB: read-only sessions for the journey reads (queries at once)
    batch_rows: int = 20000  # the journey builder writes at most this many events per insert
    flush_interval_s: float = 0.5
    # A ClickHouse cluster (its name in the servers' remote_servers): the schema is created ON CLUSTER
    # with Replicated* engines under <table>_local and Distributed tables under the public names
    # (deploy/README.md). Empty: one server or chDB, the schema as the DDL files write it.
    cluster: str = ""
    # Keeper path of each replicated table: {shard} and {replica} are the servers' macros, {database}
    # and {table} are filled in by trailmark (the local table's name).
    replication_path: str = "/clickhouse/tables/{shard}/{database}/{table}"
    # ClickHouse server: a refused or silent server becomes "unavailable" (retry) within these
    connect_timeout_s: float = 10.0
    query_timeout_s: float = 120.0  # read timeout of one request; /v1/sql limits itself below it


class AnalysisSettings(Section):
    """Retention, personas, stage KPIs, moments of truth and feedback (journey_builder/cohorts.py,
    personas.py, kpis.py, moments.py): what they read and how far one request may go."""

    personas_file: Path | None = None  # unset: journey_builder/personas.toml
    purchase_events: list[str] = ["Order Completed"]  # purchases: revenue, repeat purchase rate, personas
    revenue_property: str = "revenue"  # the purchase event's property holding its amount
    nps_event: str = "NPS Answered"  # properties.score 0-10
    csat_event: str = "CSAT Answered"  # properties.score 1-5
    moments_min_support: int = 20  # a moment needs this many contacts with it (and without it) to be listed
    moments_confidence: float = 0.95  # of the lift's interval
    # a moments answer is kept (saved_answers) and served this long before it is computed again in
    # the background; 0: every request computes (seconds at 10M events: bench/RESULTS.md)
    moments_max_age_s: float = 300.0
    max_periods: int = 52  # retention periods and KPI weeks a request may ask for
    max_rows: int = 500  # rows (moments, cohorts) one answer may hold
    # ClickHouse limits on every one of these reads (the query's own settings; over one: 400)
    max_execution_s: float = 20.0
    max_memory_bytes: int = 2 * 1024**3
    max_threads: int = 2
    # analysis reads (funnel, paths, attribution, clicks, stages, pain points, retention, personas,
    # KPIs, moments) running at once: per read key, and for the server; more wait this long, then 429
    max_concurrent_reads_per_key: int = 2
    max_concurrent_reads: int = 4
    queue_timeout_s: float = 30.0


class JourneySettings(Section):
    session_timeout_s: int = 30 * 60
    conversions: list[str] = ["Order Completed", "Signed Up", "$form_submit", "form_submit"]
    lookback_days: int = 30
    time_decay_half_life_days: float = 7.0
    stages_file: Path | None = None
    include_bots: bool = False
    # visitors the builder keeps in memory between batches (about 1 KB each); past it the least
    # recently seen are dropped and reloaded from ClickHouse when they come back. Sized so that
    # `make run` stays under 1 GiB with chDB's own ~0.5 GiB (bench/memory.py): ~0.8 KB a visitor,
    # 38 MiB at this size
    max_visitors: int = 50_000
    # Interests (issue 14; schemas/ddl/015_interests.sql): scores decay with this half-life, applied
    # when read, so changing it is right for every event already stored
    interest_half_life_days: float = 30.0
    interest_top: int = 10  # interests per contact in /v1/journeys and the map
    # the interest kinds shown and filtered on; leave one out to switch that source off
    interest_kinds: list[str] = ["content_group", "section", "product_category", "product", "search", "campaign_term"]
    # ?interest= keeps contacts whose score is at least this (one page view ~100 days ago: 0.1)
    interest_min_score: float = 0.1
    # GET /v1/accounts/{id}: at most this many contacts, and touchpoints in the combined journey
    account_max_contacts: int = 500
    account_max_touchpoints: int = 1000
    analysis: AnalysisSettings = AnalysisSettings()  # TRAILMARK_JOURNEYS__ANALYSIS__*


class SqlSettings(Section):
    """Limits of ``/v1/sql`` (and ``trailmark sql``): ClickHouse enforces them per query, the read API
    bounds how many run at once so data-team queries never starve the collector or the journey reads."""

    max_execution_s: float = 30.0
    max_memory_bytes: int = 2 * 1024**3
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 * 1024**2
    max_threads: int = 1  # per query: heavy SQL gets one core, the pipeline keeps the other
    max_concurrent: int = 2  # queries at once for the whole server (more wait, then 429)
    max_concurrent_per_key: int = 1  # a read key with more running queries gets 429 at once
    queue_timeout_s: float = 5.0  # how long a query waits for a free slot before 429
    # table functions that only generate values (no files, network or other tables)
    table_functions: list[str] = ["numbers", "numbers_mt", "generateSeries", "generate_series", "values"]
    # system tables a data team may read (columns/tables are limited to the trailmark database)
    system_tables: list[str] = [
        "one",
        "numbers",
        "numbers_mt",
        "columns",
        "tables",
        "functions",
        "data_type_families",
        "time_zones",
    ]


class PrivacySettings(Section):
    """Erasure, export and retention of contacts' data (journey_builder/privacy.py, README "Privacy")."""

    # an erasure waits this long between passes: a journey-builder batch that passed the suppression
    # check just before the erasure began is stored by then, and the next pass deletes it
    erase_settle_s: float = 2.0
    erase_passes: int = 3
    export_page_rows: int = 1000  # events read per query while an export streams
    # days events, sessions, touchpoints and stage entries are kept (ClickHouse TTL, applied at merges);
    # 0 keeps them for good. A site's own "retention_days" in keys.json wins over this.
    retention_days: int = 0
    # What is kept of an event without analytics consent (README "Privacy"; a site's own "no_consent"
    # in keys.json wins): full (stored like any event, its consent columns say so), aggregate (only
    # counted, in consent_aggregates), drop (nothing). Full by default: which rule applies is the
    # site's legal choice, and an upgrade must not start discarding what an install used to keep.
    no_consent: Literal["full", "aggregate", "drop"] = "full"
    # DNT / GPC sent by the browser count as no consent (a site's "honour_dnt" in keys.json wins)
    honour_dnt: bool = False
    # consent categories (Segment categoryPreferences, case-insensitive) that grant analytics
    analytics_categories: list[str] = ["analytics"]


class HealthSettings(Section):
    """When a stage counts as unhealthy: /readyz answers 503 and trailmark_stage_healthy is 0."""

    crash_loop_restarts: int = 3  # restarts without a committed batch in between
    stall_after_s: float = 120.0  # a batch in flight, or records waiting, without progress this long
    restart_delay_s: float = 1.0  # pause before restarting a crashed stage


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRAILMARK_", env_nested_delimiter="__", extra="ignore", populate_by_name=True, frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, validation_alias=AliasChoices("TRAILMARK_PORT", "PORT", "port"))
    data_dir: Path = Field(Path("data"), validation_alias=AliasChoices("TRAILMARK_DATA_DIR", "DATA_DIR", "data_dir"))
    kafka_bootstrap: str = "127.0.0.1:9092"
    clickhouse_url: str | None = None  # http(s)://user:pass@host:8123 ; unset = embedded chDB
    log_level: str = "info"
    # /metrics answers only with "Authorization: Bearer <token>" when set (TRAILMARK_METRICS_TOKEN)
    metrics_token: str | None = None
    # /v1/admin/* (dead letters: list, show, replay) answer only "Authorization: Bearer <token>" when
    # set (TRAILMARK_ADMIN_TOKEN); unset, the read key of a one-site install is accepted
    admin_token: str | None = None
    # Python's cyclic GC runs its young collection after this many allocations (CPython: 700). A
    # batch of 20k events allocates millions of short-lived objects, and each collection also walks
    # the builder's visitor state: at 700, 25-35 % of the journey builder's time went to GC
    # (bench/RESULTS.md). The objects present at start are frozen out of collections too.
    gc_threshold: int = 50_000
    # Free C-heap pages handed back to the system this often (glibc malloc_trim; 0: never). A batch's
    # event dicts come from malloc, and their freed pages otherwise stay in the RSS (bench/memory.py)
    memory_trim_interval_s: float = 5.0
    # `trailmark up` only: collector processes beside the main one, so HTTP ingestion never waits on
    # the pipeline's GIL (trailmark/processes.py). Unset: on the embedded log, one per two cores
    # beyond two (at least one, at most 4), none on one core or on Kafka; 0: everything in one
    # process. Set on Kafka, each collector process has a spool of its own, which an erasure does
    # not rewrite (README "Privacy").
    collector_processes: int | None = None

    collector: CollectorSettings = CollectorSettings()
    bus: BusSettings = BusSettings()
    storage: StorageSettings = StorageSettings()
    enrich: EnrichSettings = EnrichSettings()
    companies: CompaniesSettings = CompaniesSettings()  # TRAILMARK_COMPANIES__*
    journeys: JourneySettings = JourneySettings()
    health: HealthSettings = HealthSettings()
    sql: SqlSettings = SqlSettings()
    privacy: PrivacySettings = PrivacySettings()
