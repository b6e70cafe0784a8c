-- trailmark schema, version 6: erasure of a contact (`DELETE /v1/contacts/{contact}`, `trailmark erase`).
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';', every
-- statement idempotent.
-- Neither table holds an identifier in the clear: an erased identifier is kept only as a hash, which
-- lets the journey builder drop its late or replayed events without remembering who it was.

CREATE TABLE IF NOT EXISTS {db}.suppressed_identifiers
(
    site_id LowCardinality(String),
    hash String COMMENT 'hex SHA-256 of site_id, a NUL byte and the typed identifier (anon:ID, user:ID, email:address)',
    request_id String COMMENT 'the erasure that added it (erasure_requests.request_id)',
    suppressed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, hash)
SETTINGS index_granularity = 256
;
CREATE TABLE IF NOT EXISTS {db}.erasure_requests
(
    site_id LowCardinality(String),
    request_id String,
    contact_hash String COMMENT 'hash of the contact as asked for (same hash as suppressed_identifiers)',
    status LowCardinality(String) COMMENT 'running | done | failed',
    steps_done UInt32,
    steps_total UInt32,
    identifiers UInt32 COMMENT 'identifiers erased (devices, user ids, emails, contact ids)',
    detail String COMMENT 'the step running, or why it failed',
    requested_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (site_id, request_id)
SETTINGS index_granularity = 256
