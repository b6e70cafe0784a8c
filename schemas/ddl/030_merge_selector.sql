-- trailmark schema, version 30: merges that rewrite less while events arrive (issue 15). Same rules
-- as 001: `{db}` is the database, statements separated by lines holding only ';', every statement
-- idempotent.
--
-- Why: each journey-builder batch adds a small part to every table below (the builder's inserts and
-- the views they fire). ClickHouse's merge selector (merge_selector_base, default 5) merges a table's
-- newest parts into its last mid-size one once a few small parts wait, so a table of a few MB (a few
-- hundred thousand visitors) is rewritten whole every few seconds under load. In `trailmark up`
-- on two cores, after a burst of 460k events of as many visitors, merges took 5.5-8.2 s of CPU in a
-- 12-second half-load run, 1.6-1.7 s with base 10; `bench/collector.py --up` measured freshness p95
-- 1.39-1.51 s before and 0.71-0.93 s after (bench/RESULTS.md, 2026-12-05). A larger base merges the small parts
-- among themselves first and rewrites the big ones about half as often; a table holds a few more
-- parts under load. Idle, parts age and the selector lowers the base towards 1 as before, so a
-- table at rest ends in as few parts as it did.
-- A table a later migration adds, written per batch, takes the same setting in its CREATE.

ALTER TABLE {db}.events MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.event_keys MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.track_events MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.step_events MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.device_days MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.interest_hours MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.sessions_data MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.touchpoints_data MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.session_touches MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.identities_data MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.contact_handles MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.contact_devices MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.contacts_data MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.stage_transitions_data MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.device_stages MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.visitor_state MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.accounts_data MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.account_links_data MODIFY SETTING merge_selector_base = 10
;
ALTER TABLE {db}.consent_aggregates MODIFY SETTING merge_selector_base = 10
;
