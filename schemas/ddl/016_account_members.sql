-- trailmark schema, version 16: accounts from company domains, alongside accounts from `group` calls
-- (issue 14). Same rules as 001: `{db}` is the database, statements separated by lines holding only
-- ';', every statement idempotent.
--
-- A contact whose work email gives a company domain (contacts.company_domain: never a free-mail or
-- disposable domain) belongs to the account `domain:<domain>`; a contact linked by a group call
-- belongs to the group's account (its group id). Both are worked out when read, from the current
-- contacts and identity links, so a contact that changes its email or merges into another moves
-- with it, and nothing is written twice.

CREATE VIEW IF NOT EXISTS {db}.account_members AS
SELECT site_id, group_id AS account_id, 'group' AS source, contact_id, first_seen, last_seen
FROM {db}.account_contacts
UNION ALL
SELECT c.site_id AS site_id, concat('domain:', c.company_domain) AS account_id, 'domain' AS source,
       c.contact_id AS contact_id, c.first_seen AS first_seen, c.last_seen AS last_seen
FROM {db}.contacts AS c
WHERE c.company_domain != ''
  -- a contact merged into another no longer names any device: its successor is the member
  AND (c.site_id, c.contact_id) IN (SELECT site_id, contact_id FROM {db}.identity_map)
