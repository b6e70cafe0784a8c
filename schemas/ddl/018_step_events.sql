-- trailmark schema, version 18: the events funnels and attribution look up, by what they are, kept by
-- a materialized view on `events` (issue 15). Same rules as 001: `{db}` is the database, statements
-- separated by lines holding only ';', every statement idempotent.
--
-- Why: a funnel step is a page path or an event name, an attribution's conversion an event name;
-- `events` is sorted by visitor, so finding them scanned every event's type, name and path. Here each
-- non-bot event has a narrow row sorted by (kind, step), so a funnel reads only its steps' rows and
-- attribution only its conversion's, from the primary key:
--   kind 'view'  (page and screen calls): step = the page path;
--   kind 'track' (track calls): step = the event name, with its message_id (conversions are counted
--     and listed by it; '' on the other kinds);
--   kind 'entry' (any call whose channel is neither '' nor 'Internal': an arrival from somewhere):
--     step = the channel, for funnels by channel (each contact's first channel).
-- Rows belong to a device, never to a contact: the reads resolve devices through identity_map, so
-- identities linked or merged later apply retroactively, as everywhere else.
--
-- A ReplacingMergeTree whose key ends with the message_id: an event stored once has one row, and a row
-- written twice (the backfill below overlapping the view while a builder writes, or run again) is
-- one row for the reads that count (conversions read with FINAL); a funnel's steps are not changed by
-- a repeated row, so they are read without it.

CREATE TABLE IF NOT EXISTS {db}.step_events
(
    site_id LowCardinality(String),
    kind LowCardinality(String) COMMENT 'view | track | entry',
    step String COMMENT 'page path (view), event name (track) or channel (entry)',
    anonymous_id String,
    timestamp DateTime64(3, 'UTC'),
    message_id String COMMENT 'the event''s message_id on track rows, else empty',
    retention_days UInt16 COMMENT 'days this row is kept (0: for good), as its event'
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, kind, step, anonymous_id, timestamp, message_id)
TTL toDateTime(timestamp) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.step_events_mv TO {db}.step_events AS
SELECT site_id, r.1 AS kind, r.2 AS step, anonymous_id, timestamp,
       if(r.1 = 'track', message_id, '') AS message_id, retention_days
FROM {db}.events
ARRAY JOIN arrayConcat(
    multiIf(type IN ('page', 'screen'), [('view', page_path)], type = 'track', [('track', event)], []),
    if(channel NOT IN ('', 'Internal'), [('entry', toString(channel))], [])) AS r
WHERE NOT is_bot
;
-- existing installs: the events stored before this migration (the view sees only new inserts)
INSERT INTO {db}.step_events
SELECT site_id, r.1 AS kind, r.2 AS step, anonymous_id, timestamp,
       if(r.1 = 'track', message_id, '') AS message_id, retention_days
FROM {db}.events
ARRAY JOIN arrayConcat(
    multiIf(type IN ('page', 'screen'), [('view', page_path)], type = 'track', [('track', event)], []),
    if(channel NOT IN ('', 'Internal'), [('entry', toString(channel))], [])) AS r
WHERE NOT is_bot
