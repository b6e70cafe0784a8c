-- trailmark schema, version 25: per device, the first entry into each journey stage, for the
-- journey-method reads (issue 16: stage KPIs, moments of truth, the personas' stages). Same rules as
-- 001: `{db}` is the database, statements separated by lines holding only ';', every statement
-- idempotent.
--
-- Why: those reads grouped every stage row of a site (3.9M at 10M events) into per-contact histories
-- at read time. Here a device's entries are one row (five times), so a read takes a device's history
-- as it is, and groups only the devices whose contact has other devices by their current contact.
-- Why per device and not per contact: as device_days (020), a late identify that merges devices
-- changes which rows belong together; rows keyed by device stay right, and the reads resolve the
-- contact when they run.
--
-- The stages are journey_builder/stages.py's STAGES, in that order (other stage names, such as the
-- internal Purchase marker, are left out, as the reads did). A stage not entered holds 2299-12-31
-- (never). Every aggregate is idempotent (min, max): the backfill below may overlap with the view
-- and run again. Retention: each stage's time expires as the stage_transitions_data row it came
-- from (a column TTL puts back "never"), the row with the last of them.

CREATE TABLE IF NOT EXISTS {db}.device_stages
(
    site_id LowCardinality(String),
    anonymous_id String,
    awareness_at SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
        DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')
        TTL if(awareness_at > toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC'),
               toDateTime(awareness_at) + toIntervalDay(if(retention_days = 0, 20000, retention_days)))
        COMMENT 'first entry into Awareness (2299-12-31: never)',
    consideration_at SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
        DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')
        TTL if(consideration_at > toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC'),
               toDateTime(consideration_at) + toIntervalDay(if(retention_days = 0, 20000, retention_days)))
        COMMENT 'first entry into Consideration',
    decision_at SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
        DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')
        TTL if(decision_at > toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC'),
               toDateTime(decision_at) + toIntervalDay(if(retention_days = 0, 20000, retention_days)))
        COMMENT 'first entry into Decision',
    retention_at SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
        DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')
        TTL if(retention_at > toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC'),
               toDateTime(retention_at) + toIntervalDay(if(retention_days = 0, 20000, retention_days)))
        COMMENT 'first entry into Retention',
    advocacy_at SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
        DEFAULT toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')
        TTL if(advocacy_at > toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC'),
               toDateTime(advocacy_at) + toIntervalDay(if(retention_days = 0, 20000, retention_days)))
        COMMENT 'first entry into Advocacy',
    last_at SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'the latest of the entries',
    -- a changed retention setting reaches stored rows by an ALTER UPDATE (journey_builder/privacy.py)
    retention_days SimpleAggregateFunction(max, UInt16) COMMENT 'the stage rows'' retention_days (0: for good)'
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id)
TTL toDateTime(last_at) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_stages_mv TO {db}.device_stages AS
SELECT site_id, anonymous_id,
       if(stage = 'Awareness', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS awareness_at,
       if(stage = 'Consideration', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS consideration_at,
       if(stage = 'Decision', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS decision_at,
       if(stage = 'Retention', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS retention_at,
       if(stage = 'Advocacy', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS advocacy_at,
       entered_at AS last_at, retention_days
FROM {db}.stage_transitions_data
WHERE stage IN ('Awareness', 'Consideration', 'Decision', 'Retention', 'Advocacy')
;
-- existing installs: the stage rows stored before this migration (the view sees only new inserts)
INSERT INTO {db}.device_stages
SELECT site_id, anonymous_id,
       if(stage = 'Awareness', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS awareness_at,
       if(stage = 'Consideration', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS consideration_at,
       if(stage = 'Decision', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS decision_at,
       if(stage = 'Retention', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS retention_at,
       if(stage = 'Advocacy', entered_at, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC')) AS advocacy_at,
       entered_at AS last_at, retention_days
FROM {db}.stage_transitions_data
WHERE stage IN ('Awareness', 'Consideration', 'Decision', 'Retention', 'Advocacy')
