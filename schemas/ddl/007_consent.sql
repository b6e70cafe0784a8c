-- trailmark schema, version 7: the visitor's consent, stored with every event and with the contact.
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';'.
-- Read from context.consent: trailmark.js sends [choice, DNT or GPC, ids stored]; Segment's consent
-- object (categoryPreferences) is read too. Events sent without any consent have consent = ''.

ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS consent LowCardinality(String) DEFAULT ''
    COMMENT 'granted (opted in / a category granted), denied (every category refused), none (no choice made), empty: not sent'
;
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS consent_dnt Bool DEFAULT false COMMENT 'the browser sent Do Not Track or Global Privacy Control'
;
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS consent_cookieless Bool DEFAULT false COMMENT 'cookieless mode: ids were kept in memory only'
;
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS consent_categories Array(String) DEFAULT []
    COMMENT 'categories granted (Segment categoryPreferences set to true)'
;
ALTER TABLE {db}.contacts_data
    ADD COLUMN IF NOT EXISTS consent LowCardinality(String) DEFAULT '' COMMENT 'as events.consent, from the latest event naming the contact'
;
ALTER TABLE {db}.contacts_data ADD COLUMN IF NOT EXISTS consent_dnt Bool DEFAULT false
;
ALTER TABLE {db}.contacts_data ADD COLUMN IF NOT EXISTS consent_cookieless Bool DEFAULT false
;
ALTER TABLE {db}.contacts_data ADD COLUMN IF NOT EXISTS consent_categories Array(String) DEFAULT []
;
ALTER TABLE {db}.contacts_data
    ADD COLUMN IF NOT EXISTS consent_at DateTime64(3, 'UTC') DEFAULT 0 COMMENT 'time of the event the consent columns come from'
;
-- the view was created over the columns contacts_data had then: redefined to show the new ones
CREATE OR REPLACE VIEW {db}.contacts AS
SELECT * FROM {db}.contacts_data FINAL
