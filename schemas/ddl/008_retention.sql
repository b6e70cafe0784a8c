-- trailmark schema, version 8: per-site retention of events and the journey tables derived from them.
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';'.
-- A TTL cannot look a site's setting up, so each row carries its site's retention in days, filled at
-- insert time by the column's DEFAULT; the server sets that DEFAULT from keys.json at every start, and
-- updates existing rows when a site's setting changed (journey_builder/privacy.py apply_retention).
-- 0 keeps a row for good (the TTL then lies ~55 years ahead, within DateTime's range).

ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0
    COMMENT 'days this row is kept (its site''s retention_days when written; 0: for good)'
;
ALTER TABLE {db}.events MODIFY TTL toDateTime(timestamp) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
;
ALTER TABLE {db}.sessions_data ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0
    COMMENT 'days this row is kept after the session ended (0: for good)'
;
ALTER TABLE {db}.sessions_data MODIFY TTL toDateTime(end) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
;
ALTER TABLE {db}.touchpoints_data ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0
    COMMENT 'days this row is kept (0: for good)'
;
ALTER TABLE {db}.touchpoints_data MODIFY TTL toDateTime(timestamp) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
;
ALTER TABLE {db}.stage_transitions_data ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0
    COMMENT 'days this row is kept (0: for good)'
;
ALTER TABLE {db}.stage_transitions_data MODIFY TTL toDateTime(entered_at) + toIntervalDay(if(retention_days = 0, 20000, retention_days))
