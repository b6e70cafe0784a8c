-- trailmark schema, version 20: per device and day, what it did, for the journey-method reads (issue 16:
-- retention, moments of truth). Same rules as 001: `{db}` is the database, statements separated by
-- lines holding only ';', every statement idempotent.
--
-- Why per device and not per contact: a contact is resolved when read (identity_map), so a late
-- identify that merges two devices changes which rows belong together; rows keyed by device stay
-- right whatever is merged later, and the reads group them by the device's current contact.
-- Why per day: retention's periods (weeks, months) are whole UTC days, and a TTL can drop a day's
-- row once its events are past the site's retention. Exact times are kept where a read compares them
-- with stage entries (moments of truth): `times`.
--
-- Every aggregate is idempotent (min, max, set union): a row counted twice changes nothing, so the
-- backfill below may overlap with the materialized view (a builder writing during the migration),
-- and may run again, without counting an event twice.
--
-- Rows per event (bots left out): kind '' (any event); 'page' (page or screen view: its path);
-- 'event' (track: its name); 'channel' (an event that entered the site from a channel: not '' nor
-- 'Internal').

CREATE TABLE IF NOT EXISTS {db}.device_days
(
    site_id LowCardinality(String),
    kind LowCardinality(String) COMMENT 'empty: any event; page, event or channel',
    name String COMMENT 'page path, event name or channel (empty for any event)',
    anonymous_id String,
    day Date COMMENT 'UTC day of the events',
    first_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')) COMMENT 'first of those events',
    first_channel SimpleAggregateFunction(min, Tuple(DateTime64(3, 'UTC'), String))
        COMMENT '(time, channel) of the first of them with a channel (not empty, not Internal); (2299-12-31, empty) if none',
    times SimpleAggregateFunction(groupUniqArrayArray, Array(DateTime64(3, 'UTC')))
        COMMENT 'every distinct time of them (empty for any event)',
    -- a changed retention setting reaches stored rows by an ALTER UPDATE (journey_builder/privacy.py)
    retention_days SimpleAggregateFunction(max, UInt16) COMMENT 'the events'' retention_days (0: for good)'
)
ENGINE = AggregatingMergeTree
-- kind and name first: a read of one start event or of every event reads only its range
ORDER BY (site_id, kind, name, anonymous_id, day)
TTL day + toIntervalDay(if(retention_days = 0, 20000, retention_days))
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_days_mv TO {db}.device_days AS
SELECT site_id, k.1 AS kind, k.2 AS name, anonymous_id, toDate(timestamp) AS day, timestamp AS first_at,
       if(channel IN ('', 'Internal'), (toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'), ''),
          (timestamp, toString(channel))) AS first_channel,
       if(k.1 = '', [], [timestamp]) AS times, retention_days
FROM {db}.events
ARRAY JOIN arrayFilter(k -> k.1 = '' OR k.2 != '', [
    ('', ''),
    ('page', if(type IN ('page', 'screen'), page_path, '')),
    ('event', if(type = 'track', event, '')),
    ('channel', if(channel IN ('', 'Internal'), '', toString(channel)))]) AS k
WHERE NOT is_bot
;
-- existing installs: the events stored before this migration (the view sees only new inserts)
INSERT INTO {db}.device_days
SELECT site_id, k.1 AS kind, k.2 AS name, anonymous_id, toDate(timestamp) AS day, timestamp AS first_at,
       if(channel IN ('', 'Internal'), (toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC'), ''),
          (timestamp, toString(channel))) AS first_channel,
       if(k.1 = '', [], [timestamp]) AS times, retention_days
FROM {db}.events
ARRAY JOIN arrayFilter(k -> k.1 = '' OR k.2 != '', [
    ('', ''),
    ('page', if(type IN ('page', 'screen'), page_path, '')),
    ('event', if(type = 'track', event, '')),
    ('channel', if(channel IN ('', 'Internal'), '', toString(channel)))]) AS k
WHERE NOT is_bot
