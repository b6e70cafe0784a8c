-- trailmark schema, version 12: company profiles from public sources (enrich/companies), looked up by
-- domain off the event path. Same rules as 001: `{db}` is the database, statements separated by lines
-- holding only ';', every statement idempotent.
-- A domain is looked up once (whichever site asked first) and a row is written for every site that
-- asked: rows carry site_id like every other table, so the SQL endpoint's per-site filter keeps one
-- site from learning which companies another site's contacts work for.

CREATE TABLE IF NOT EXISTS {db}.company_profiles_data
(
    site_id LowCardinality(String),
    domain String COMMENT 'registered domain looked up (a company email domain, a website/domain trait)',
    status LowCardinality(String) COMMENT 'ok, not_found, refused (robots.txt, not a public address), error',
    reason String COMMENT 'why a source gave nothing (one line per source), empty when all answered',
    name String,
    legal_name String,
    description String,
    logo String,
    icon String,
    language LowCardinality(String),
    country LowCardinality(String),
    address String,
    founded String COMMENT 'as the site writes it: a year or a date',
    employees String COMMENT 'a number or a range (11-50)',
    same_as Array(String) COMMENT 'schema.org sameAs URLs',
    linkedin String,
    twitter String,
    github String,
    facebook String,
    youtube String,
    instagram String,
    mail_provider LowCardinality(String) COMMENT 'from MX: Google Workspace, Microsoft 365, Zoho, self-hosted, ...',
    mx Array(String),
    technologies Array(String) COMMENT 'from TXT verification tokens and SPF includes',
    registered_at DateTime64(3, 'UTC') COMMENT 'RDAP registration event; 1970-01-01 when unknown',
    field_sources String COMMENT 'JSON object: field -> the source that gave it (a URL, dns:MX <domain>, rdap:<url>)',
    fetched_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (site_id, domain)
SETTINGS index_granularity = 256
;
CREATE VIEW IF NOT EXISTS {db}.company_profiles AS
SELECT * FROM {db}.company_profiles_data FINAL
;
CREATE VIEW IF NOT EXISTS {db}.contact_companies AS
SELECT c.site_id AS site_id, c.contact_id AS contact_id, c.email AS email, c.company_domain AS company_domain,
       if(p.name != '', p.name, c.company_name) AS company_name,
       p.legal_name AS legal_name, p.description AS description, p.logo AS logo, p.icon AS icon,
       p.language AS language, p.country AS country, p.address AS address, p.founded AS founded,
       p.employees AS employees, p.same_as AS same_as, p.linkedin AS linkedin, p.twitter AS twitter,
       p.github AS github, p.facebook AS facebook, p.youtube AS youtube, p.instagram AS instagram,
       p.mail_provider AS mail_provider, p.technologies AS technologies, p.registered_at AS registered_at,
       p.field_sources AS field_sources, p.status AS status, p.fetched_at AS fetched_at
FROM {db}.contacts AS c
INNER JOIN {db}.company_profiles AS p ON p.site_id = c.site_id AND p.domain = c.company_domain
WHERE c.company_domain != ''
