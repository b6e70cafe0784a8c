-- trailmark schema, version 21: the track events, sorted by name, for the journey-method reads that
-- look at a few event names among all events (issue 16: purchases and revenue, NPS and CSAT answers in
-- /v1/kpis). Same rules as 001: `{db}` is the database, statements separated by lines holding only
-- ';', every statement idempotent.
--
-- `events` is sorted by visitor, so finding the `Order Completed` events of a site reads every event;
-- this narrow copy (no page views, no bots, a few columns) is sorted by name first, so those reads
-- read their names' range only. Which names count as purchases or answers are settings, read at
-- query time, so every track event is kept. A ReplacingMergeTree on the event's messageId: the
-- backfill below may overlap with the materialized view, or run again, and the reads (FINAL) still
-- see each event once.

CREATE TABLE IF NOT EXISTS {db}.track_events
(
    site_id LowCardinality(String),
    event String,
    anonymous_id String,
    timestamp DateTime64(3, 'UTC'),
    message_id String,
    session_id String,
    properties String COMMENT 'JSON text, as in events',
    retention_days UInt16 COMMENT 'the event''s retention_days (0: for good)'
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, event, anonymous_id, timestamp, message_id)
TTL toDateTime(timestamp) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.track_events_mv TO {db}.track_events AS
SELECT site_id, event, anonymous_id, timestamp, message_id, session_id, properties, retention_days
FROM {db}.events
WHERE type = 'track' AND NOT is_bot
;
-- existing installs: the events stored before this migration (the view sees only new inserts)
INSERT INTO {db}.track_events
SELECT site_id, event, anonymous_id, timestamp, message_id, session_id, properties, retention_days
FROM {db}.events
WHERE type = 'track' AND NOT is_bot
