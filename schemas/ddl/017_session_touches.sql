-- trailmark schema, version 17: each device's session entries, kept by a materialized view, for
-- attribution (issue 15). Same rules as 001: `{db}` is the database, statements separated by lines
-- holding only ';', every statement idempotent.
--
-- Why: attribution credits the session entries of a converting contact's devices. Read from
-- touchpoints_data they cost a FINAL over every kind of touchpoint and a filter on kind; here they
-- are alone, narrow and sorted by device. Rows belong to a device, never to a contact: the read
-- resolves devices through identity_map, so a device identified or merged later is attributed
-- retroactively, as everywhere else.
--
-- A session_start touchpoint is written once, when its session begins; a row written twice (a
-- batch processed again, or the backfill below overlapping the view while a builder writes) is the
-- same row, which the ReplacingMergeTree key and the read's de-duplication by session both absorb.

CREATE TABLE IF NOT EXISTS {db}.session_touches
(
    site_id LowCardinality(String),
    anonymous_id String,
    session_id String,
    timestamp DateTime64(3, 'UTC') COMMENT 'the session''s start',
    channel LowCardinality(String),
    source LowCardinality(String),
    medium LowCardinality(String),
    campaign LowCardinality(String),
    retention_days UInt16 COMMENT 'days this row is kept (0: for good), as its touchpoint'
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, anonymous_id, session_id)
TTL toDateTime(timestamp) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
SETTINGS index_granularity = 1024
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.session_touches_mv TO {db}.session_touches AS
SELECT site_id, anonymous_id, session_id, timestamp, channel, source, medium, campaign, retention_days
FROM {db}.touchpoints_data
WHERE kind = 'session_start'
;
-- existing installs: the touchpoints stored before this migration (the view sees only new inserts)
INSERT INTO {db}.session_touches
SELECT site_id, anonymous_id, session_id, timestamp, channel, source, medium, campaign, retention_days
FROM {db}.touchpoints_data
WHERE kind = 'session_start'
