-- trailmark schema, version 9: events without analytics consent, kept only as daily counts.
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';'.
-- Filled for sites whose "no_consent" is "aggregate" (journey_builder/privacy.py split_by_consent):
-- such an event is not stored as an event, session, identity or contact; it adds 1 to the row of
-- its site, UTC day and the columns below. No identifier, address, URL query or property is kept, so
-- the table is outside erasure and retention. SummingMergeTree adds rows of one key up when parts
-- merge: read it with sum(events) ... GROUP BY.

CREATE TABLE IF NOT EXISTS {db}.consent_aggregates
(
    site_id LowCardinality(String),
    day Date COMMENT 'UTC day of the events',
    type LowCardinality(String) COMMENT 'page | screen | track | identify | group | alias',
    event String COMMENT 'track event name, or page/screen name',
    page_path String COMMENT 'path of the page, without its query',
    channel LowCardinality(String),
    source String,
    medium LowCardinality(String),
    campaign String COMMENT 'utm_campaign',
    country LowCardinality(String) COMMENT 'ISO country code from the address (the address is not kept)',
    device_type LowCardinality(String),
    browser LowCardinality(String),
    events UInt64 COMMENT 'events counted'
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(day)
ORDER BY (site_id, day, type, event, page_path, channel, source, medium, campaign, country, device_type, browser)
