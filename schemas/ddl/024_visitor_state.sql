-- trailmark schema, version 24: what the journey builder reads back for a returning visitor (issue 15).
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';', every
-- statement idempotent.
--
-- Why: a visitor the builder does not hold in memory (a restart, a rebalance, a visitor back after
-- the in-memory cache let it go) had its state rebuilt from `events`, which is sorted by visitor in
-- granules of 8,192 rows: a batch of a few thousand returning visitors spread over a large table read
-- nearly every granule, four times (messageIds, sessions, open-session counters, stages), and at 10M
-- stored events the builder managed about 2,600 events per CPU second. These two narrow tables, in
-- granules of 256 rows, answer the same questions by primary key.
--
-- event_keys: every stored event's messageId by visitor, copied from `events` by a materialized view;
-- the builder's duplicate check (an event already stored is skipped) reads it instead of `events`.
-- A row twice (the backfill overlapping the view while a builder writes) changes no answer.
--
-- visitor_state: the builder's in-memory state of a visitor (its open session, how many sessions,
-- the stages it entered) as of a batch, one row per visitor and batch, written with the batch's
-- other derived rows, before its events. A row holds only if its batch's events were stored: it names
-- the batch's first and last event of the visitor (`markers`), and the builder uses it only when
-- both are in event_keys; else (a builder stopped between its inserts, or an install upgraded from
-- before this table) it rebuilds the state from `events` as before.

CREATE TABLE IF NOT EXISTS {db}.event_keys
(
    site_id LowCardinality(String),
    anonymous_id String,
    message_id String,
    timestamp DateTime64(3, 'UTC'),
    retention_days UInt16 COMMENT 'the event''s retention_days (0: for good)'
)
ENGINE = MergeTree
ORDER BY (site_id, anonymous_id, message_id)
TTL toDateTime(timestamp) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
SETTINGS index_granularity = 256
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_keys_mv TO {db}.event_keys AS
SELECT site_id, anonymous_id, message_id, timestamp, retention_days
FROM {db}.events
;
-- existing installs: the events stored before this migration (the view sees only new inserts)
INSERT INTO {db}.event_keys
SELECT site_id, anonymous_id, message_id, timestamp, retention_days
FROM {db}.events
;
CREATE TABLE IF NOT EXISTS {db}.visitor_state
(
    site_id LowCardinality(String),
    anonymous_id String,
    version UInt64,
    markers Array(String) COMMENT 'messageIds of the first and last event of the visitor in the batch that wrote the row',
    sessions UInt32 COMMENT 'sessions so far',
    stages Array(LowCardinality(String)) COMMENT 'journey stages entered so far',
    session_id String COMMENT 'the open (latest) session, as in sessions_data',
    start DateTime64(3, 'UTC'),
    end DateTime64(3, 'UTC'),
    campaign_key String,
    referrer_host String,
    channel LowCardinality(String),
    source LowCardinality(String),
    medium LowCardinality(String),
    campaign LowCardinality(String),
    click_id_type LowCardinality(String),
    entry_page String,
    exit_page String,
    user_id String,
    pageviews UInt32,
    events UInt32,
    conversions UInt32,
    device LowCardinality(String),
    browser LowCardinality(String),
    os LowCardinality(String),
    country LowCardinality(String),
    retention_days UInt16 COMMENT 'the site''s retention_days (0: for good)'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (site_id, anonymous_id)
TTL toDateTime(end) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
SETTINGS index_granularity = 256
