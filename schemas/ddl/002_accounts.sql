-- trailmark schema, version 2: accounts (Segment `group` calls) and the top-level event fields
-- without a column of their own. Same rules as 001: `{db}` is the database, statements separated by
-- lines holding only ';', every statement idempotent.
-- A group call describes an account (a company, a team), not the person who made it: its traits
-- go to accounts_data, and account_links_data links the visitor to the account. The contact is
-- resolved at query time through identity_map, like every other view, so a link made while the
-- visitor was anonymous follows it to its contact.

CREATE TABLE IF NOT EXISTS {db}.accounts_data
(
    site_id LowCardinality(String),
    group_id String,
    name String,
    domain String,
    traits String COMMENT 'group traits merged (latest non-empty value wins), JSON text',
    first_seen DateTime64(3, 'UTC'),
    last_seen DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (site_id, group_id)
SETTINGS index_granularity = 256
;
CREATE TABLE IF NOT EXISTS {db}.account_links_data
(
    site_id LowCardinality(String),
    group_id String,
    anonymous_id String,
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id, group_id)
SETTINGS index_granularity = 256
;
CREATE VIEW IF NOT EXISTS {db}.accounts AS
SELECT * FROM {db}.accounts_data FINAL
;
CREATE VIEW IF NOT EXISTS {db}.account_contacts AS
SELECT l.site_id AS site_id, l.group_id AS group_id,
       if(m.contact_id = '', concat('anon:', l.anonymous_id), m.contact_id) AS contact_id,
       min(l.first_seen) AS first_seen, max(l.last_seen) AS last_seen
FROM {db}.account_links_data AS l
LEFT JOIN {db}.identity_map AS m ON m.site_id = l.site_id AND m.anonymous_id = l.anonymous_id
GROUP BY site_id, group_id, contact_id
;
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS extra String DEFAULT ''
    COMMENT 'top-level event fields without a column (integrations, channel, category, _metadata, ...), JSON text'
    AFTER context
