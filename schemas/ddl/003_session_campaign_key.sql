-- trailmark schema, version 3: the campaign key that started a session is stored with it, so a
-- journey builder that restarts (or takes over a visitor after a rebalance) compares the next event's
-- campaign with the same key the first builder used (utm source|medium|campaign|click id).
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';'.

ALTER TABLE {db}.sessions_data
    ADD COLUMN IF NOT EXISTS campaign_key String DEFAULT ''
    COMMENT 'utm source|medium|campaign|click id that started the session (empty: none); a different one starts a new session'
;
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS source LowCardinality(String) DEFAULT ''
    COMMENT 'GA-style source, lower case: utm_source, else the referrer name (google, facebook), else its host'
;
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS medium LowCardinality(String) DEFAULT ''
    COMMENT 'GA-style medium, lower case: utm_medium, else organic / social / email / referral by referrer type'
;
