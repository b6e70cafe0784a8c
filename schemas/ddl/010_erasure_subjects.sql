-- trailmark schema, version 10: an unfinished erasure's working copy of its subject, so an erasure
-- interrupted by a stop (or failed on a storage error) resumes at the next start and finishes.
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';'.
-- By then some tables no longer name the contact, so it cannot be looked up again. The row holds the
-- identifiers the erasure is deleting, only while it has not finished deleting them elsewhere; it is
-- deleted (a mutation) when the erasure is done. No site_id column: /v1/sql cannot read it.

CREATE TABLE IF NOT EXISTS {db}.erasure_subjects
(
    request_id String COMMENT 'erasure_requests.request_id',
    subject String COMMENT 'JSON: site_id, contact_id, contact_ids, anonymous_ids, user_ids, emails',
    created_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY request_id
SETTINGS index_granularity = 256
