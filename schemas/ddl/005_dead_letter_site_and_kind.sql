-- trailmark schema, version 5: a dead letter knows its site (so each read key sees its own site's
-- dead letters in /v1/sql, like every other table) and its kind (why, as a fixed word the runner
-- chose: unreadable, invalid, enrich_failed, unserializable, build_failed, unknown).
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';'.

ALTER TABLE {db}.dead_letters
    ADD COLUMN IF NOT EXISTS site_id LowCardinality(String) DEFAULT ''
    COMMENT 'site of the failed record (from its bus key or content); empty when it could not be told'
;
ALTER TABLE {db}.dead_letters
    ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT ''
    COMMENT 'why, as one word: unreadable, invalid, enrich_failed, unserializable, build_failed, unknown'
;
