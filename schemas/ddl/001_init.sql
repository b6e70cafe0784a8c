-- trailmark schema, version 1. `{db}` is replaced by the database name (default: trailmark).
-- Statements are separated by lines holding only ';'. Every statement is idempotent.
-- Base tables hold what the journey builder writes; the public names (sessions, touchpoints,
-- contacts, identities, stage_transitions) are views that collapse versions (FINAL) and resolve
-- each anonymous visitor to its contact at query time, so identity stitching is retroactive in
-- every query without rewriting history.

CREATE DATABASE IF NOT EXISTS {db}
;
CREATE TABLE IF NOT EXISTS {db}.events
(
    site_id LowCardinality(String),
    message_id String,
    type LowCardinality(String),
    event String,
    anonymous_id String,
    user_id String,
    contact_id String COMMENT 'contact known when the event was written; use identity_map for the current one',
    session_id String,
    timestamp DateTime64(3, 'UTC'),
    original_timestamp DateTime64(3, 'UTC'),
    sent_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    properties String COMMENT 'JSON text: use JSONExtract*',
    traits String,
    context String,
    ip String,
    user_agent String,
    page_url String,
    page_host LowCardinality(String),
    page_path String,
    page_query String,
    page_title String,
    content_group LowCardinality(String),
    referrer String,
    referrer_host LowCardinality(String),
    referrer_type LowCardinality(String),
    referrer_name LowCardinality(String),
    search_term String,
    utm_source LowCardinality(String),
    utm_medium LowCardinality(String),
    utm_campaign LowCardinality(String),
    utm_term String,
    utm_content String,
    click_id_type LowCardinality(String),
    click_id String,
    channel LowCardinality(String),
    ua_browser LowCardinality(String),
    ua_browser_version LowCardinality(String),
    ua_os LowCardinality(String),
    ua_os_version LowCardinality(String),
    ua_device_type LowCardinality(String),
    ua_device_brand LowCardinality(String),
    ua_device_model LowCardinality(String),
    is_bot Bool,
    bot_name LowCardinality(String),
    geo_country LowCardinality(String),
    geo_region LowCardinality(String),
    geo_city LowCardinality(String),
    geo_lat Float64,
    geo_lon Float64,
    geo_timezone LowCardinality(String),
    geo_asn UInt32,
    geo_org LowCardinality(String),
    email String,
    email_domain LowCardinality(String),
    email_free Bool,
    email_disposable Bool,
    company_domain LowCardinality(String),
    company_name LowCardinality(String),
    phone_e164 String,
    phone_country LowCardinality(String),
    phone_carrier LowCardinality(String),
    phone_line_type LowCardinality(String),
    phone_timezone LowCardinality(String),
    first_name String,
    last_name String,
    enrich_errors Array(String),
    INDEX idx_message_id message_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_session_id session_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (site_id, anonymous_id, timestamp, message_id)
;
CREATE TABLE IF NOT EXISTS {db}.sessions_data
(
    site_id LowCardinality(String),
    session_id String,
    anonymous_id String,
    user_id String,
    start DateTime64(3, 'UTC'),
    end DateTime64(3, 'UTC'),
    pageviews UInt32,
    events UInt32,
    entry_page String,
    exit_page String,
    referrer_host LowCardinality(String),
    channel LowCardinality(String),
    source LowCardinality(String),
    medium LowCardinality(String),
    campaign LowCardinality(String),
    click_id_type LowCardinality(String),
    device LowCardinality(String),
    browser LowCardinality(String),
    os LowCardinality(String),
    country LowCardinality(String),
    converted Bool,
    conversions UInt32,
    version UInt64,
    INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (site_id, anonymous_id, session_id)
SETTINGS index_granularity = 256
;
CREATE TABLE IF NOT EXISTS {db}.touchpoints_data
(
    site_id LowCardinality(String),
    touchpoint_id String COMMENT 'session_id for a session entry, message_id for an interaction',
    session_id String,
    anonymous_id String,
    timestamp DateTime64(3, 'UTC'),
    kind LowCardinality(String) COMMENT 'session_start | form_submit | conversion | contact | identify',
    event String,
    page_path String,
    channel LowCardinality(String),
    source LowCardinality(String),
    medium LowCardinality(String),
    campaign LowCardinality(String),
    stage LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, anonymous_id, touchpoint_id, kind)
SETTINGS index_granularity = 256
;
CREATE TABLE IF NOT EXISTS {db}.identities_data
(
    site_id LowCardinality(String),
    anonymous_id String,
    contact_id String,
    user_id String,
    email String,
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    INDEX idx_contact contact_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_user user_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_email email TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id, contact_id, user_id, email)
SETTINGS index_granularity = 256
;
CREATE TABLE IF NOT EXISTS {db}.contacts_data
(
    site_id LowCardinality(String),
    contact_id String,
    user_id String,
    email String,
    email_domain LowCardinality(String),
    email_free Bool,
    email_disposable Bool,
    company_domain LowCardinality(String),
    company_name String,
    phone_e164 String,
    phone_country LowCardinality(String),
    phone_carrier LowCardinality(String),
    phone_line_type LowCardinality(String),
    first_name String,
    last_name String,
    country LowCardinality(String),
    traits String COMMENT 'merged identify traits, JSON text',
    field_sources String COMMENT 'JSON object: field -> message_id/source that last set it',
    first_seen DateTime64(3, 'UTC'),
    last_seen DateTime64(3, 'UTC'),
    version UInt64,
    INDEX idx_email email TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (site_id, contact_id)
SETTINGS index_granularity = 256
;
CREATE TABLE IF NOT EXISTS {db}.stage_transitions_data
(
    site_id LowCardinality(String),
    anonymous_id String,
    stage LowCardinality(String),
    entered_at DateTime64(3, 'UTC'),
    rule String,
    message_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, anonymous_id, stage, entered_at)
SETTINGS index_granularity = 256
;
CREATE TABLE IF NOT EXISTS {db}.contact_handles
(
    site_id LowCardinality(String),
    handle String COMMENT 'a contact id, userId, email or anonymousId that names the contact',
    contact_id String,
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, handle, contact_id)
SETTINGS index_granularity = 256
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.contact_handles_mv TO {db}.contact_handles AS
SELECT site_id, arrayJoin(arrayFilter(x -> x != '', [contact_id, user_id, email, anonymous_id])) AS handle,
       contact_id, last_seen
FROM {db}.identities_data
;
CREATE TABLE IF NOT EXISTS {db}.contact_devices
(
    site_id LowCardinality(String),
    contact_id String,
    anonymous_id String,
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, contact_id, anonymous_id)
SETTINGS index_granularity = 256
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.contact_devices_mv TO {db}.contact_devices AS
SELECT site_id, contact_id, anonymous_id, last_seen FROM {db}.identities_data
;
CREATE VIEW IF NOT EXISTS {db}.identities AS
SELECT site_id, anonymous_id, contact_id, user_id, email,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen
FROM {db}.identities_data
GROUP BY site_id, anonymous_id, contact_id, user_id, email
;
CREATE VIEW IF NOT EXISTS {db}.identity_map AS
SELECT site_id, anonymous_id, argMax(contact_id, last_seen) AS contact_id
FROM {db}.identities_data
GROUP BY site_id, anonymous_id
;
CREATE VIEW IF NOT EXISTS {db}.sessions AS
SELECT s.site_id AS site_id, s.session_id AS session_id,
       if(m.contact_id = '', concat('anon:', s.anonymous_id), m.contact_id) AS contact_id,
       s.anonymous_id AS anonymous_id, s.user_id AS user_id, s.start AS start, s.end AS end,
       toUInt32(dateDiff('second', s.start, s.end)) AS duration_s,
       s.pageviews AS pageviews, s.events AS events, s.entry_page AS entry_page, s.exit_page AS exit_page,
       s.referrer_host AS referrer_host, s.channel AS channel, s.source AS source, s.medium AS medium,
       s.campaign AS campaign, s.click_id_type AS click_id_type, s.device AS device,
       s.browser AS browser, s.os AS os, s.country AS country,
       s.pageviews <= 1 AND s.events <= 1 AS bounce, s.converted AS converted, s.conversions AS conversions
FROM {db}.sessions_data AS s FINAL
LEFT JOIN {db}.identity_map AS m ON m.site_id = s.site_id AND m.anonymous_id = s.anonymous_id
;
CREATE VIEW IF NOT EXISTS {db}.touchpoints AS
SELECT t.site_id AS site_id, t.touchpoint_id AS touchpoint_id, t.session_id AS session_id,
       if(m.contact_id = '', concat('anon:', t.anonymous_id), m.contact_id) AS contact_id,
       t.anonymous_id AS anonymous_id, t.timestamp AS timestamp, t.kind AS kind, t.event AS event,
       t.page_path AS page_path, t.channel AS channel, t.source AS source, t.medium AS medium,
       t.campaign AS campaign, t.stage AS stage
FROM {db}.touchpoints_data AS t FINAL
LEFT JOIN {db}.identity_map AS m ON m.site_id = t.site_id AND m.anonymous_id = t.anonymous_id
;
CREATE VIEW IF NOT EXISTS {db}.contacts AS
SELECT * FROM {db}.contacts_data FINAL
;
CREATE VIEW IF NOT EXISTS {db}.stage_transitions AS
SELECT t.site_id AS site_id,
       if(m.contact_id = '', concat('anon:', t.anonymous_id), m.contact_id) AS contact_id,
       t.stage AS stage, min(t.entered_at) AS entered_at, argMin(t.rule, t.entered_at) AS rule
FROM {db}.stage_transitions_data AS t
LEFT JOIN {db}.identity_map AS m ON m.site_id = t.site_id AND m.anonymous_id = t.anonymous_id
GROUP BY site_id, contact_id, stage
;
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    stage LowCardinality(String),
    reason String,
    payload String,
    payload_encoding LowCardinality(String),
    failed_at DateTime64(3, 'UTC'),
    version UInt32
)
ENGINE = MergeTree
ORDER BY failed_at
