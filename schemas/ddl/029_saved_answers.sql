-- trailmark schema, version 29: answers of the dearest reads, kept for a while (issue 16).
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';', every
-- statement idempotent.
--
-- Why: `/v1/moments` joins every (contact, moment) pair of a site to its contact's stage entries and
-- conversion (about 12M pairs at 10M events): 3.9-4.2 s at 10M on 2 cores, however the query is
-- written (bench/RESULTS.md). Its answer changes slowly, so it is kept here, shared by every reader
-- process, and served while it is younger than `analysis.moments_max_age_s`; an older one is served
-- once more while the reader computes it again in the background (journey_builder/saved.py).
--
-- One row per (site, kind of read, parameters) and computation; a read takes the newest. The rows
-- hold counts and names (pages, events, channels), never an identifier; an erasure deletes the
-- site's rows all the same, since a name a single contact had is in them until they are computed
-- again. A row not computed again for a day expires.

CREATE TABLE IF NOT EXISTS {db}.saved_answers
(
    site_id LowCardinality(String),
    kind LowCardinality(String) COMMENT 'the read: moments',
    key String COMMENT 'SHA-256 of the read''s parameters (journey_builder/saved.py)',
    computed_at DateTime64(3, 'UTC') COMMENT 'when the computation began: the answer holds the data stored by then',
    value String COMMENT 'JSON: what the read computed'
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (site_id, kind, key)
TTL toDateTime(computed_at) + toIntervalDay(1)
SETTINGS index_granularity = 256
