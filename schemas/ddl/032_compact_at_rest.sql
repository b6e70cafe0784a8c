-- trailmark schema, version 32: the tables a contact's journey reads end in one part each once they
-- have been at rest for an hour (issue 15). Same rules as 001: `{db}` is the database, statements
-- separated by lines holding only ';', every statement idempotent.
--
-- Why: a journey read (journey_builder/queries.py) is nine point queries on these tables, and each
-- costs in proportion to the parts it opens, column by column. Right after a load of 10M events they
-- hold 4-16 parts each (ClickHouse merges big parts only as they age: here, four hours after a 10M
-- load), and a journey took 65.8 ms of CPU in one process; with one part each, 37.8 ms
-- (bench/RESULTS.md, 2026-12-06 "the journey read by parts").
-- min_age_to_force_merge_seconds with min_age_to_force_merge_on_partition_only merges a whole
-- partition (these tables have one) into one part only when every part of it is older than the
-- age: a table still written (a batch adds a part every few seconds under load) is never merged
-- this way, and merges as migration 030 says; one at rest for an hour is merged once, rewriting it
-- whole (about 25 s of CPU for all of them at 10M events, on the machine of bench/RESULTS.md).
-- Funnels and attribution (step_events, session_touches) scan millions of rows: their CPU did not
-- change with one part, so those tables are not here, nor `events`, whose monthly partitions would be
-- rewritten whole.

ALTER TABLE {db}.contact_handles MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.contact_devices MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.identities_data MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.contacts_data MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.sessions_data MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.touchpoints_data MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.stage_transitions_data MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.account_links_data MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.accounts_data MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
;
ALTER TABLE {db}.interest_hours MODIFY SETTING min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1
