-- trailmark schema, version 15: interests, kept current as events arrive (issue 14).
-- Same rules as 001: `{db}` is the database, statements separated by lines holding only ';', every
-- statement idempotent.
--
-- What a visitor is interested in, learnt from the events themselves: content groups, page
-- sections, product categories and names of ecommerce events, search terms and campaign terms.
-- A materialized view on `events` adds one row per (visitor, kind, value, hour) the moment the
-- journey builder stores an event, so interests are current without a batch job and without the
-- builder knowing about them.
--
-- Why hourly buckets of raw weights, and decay at read time: an exponential decay with half-life H
-- is score = sum(weight * 2^(-(now - t) / H)). Folding the decay into the stored value (storing
-- weight * 2^((t - EPOCH) / H) and multiplying by 2^(-(now - EPOCH) / H) when reading) would be exact
-- per event, but only for the H it was written with: changing the half-life setting would need a
-- rewrite of every row. Storing undecayed weights per hour and decaying each bucket from its hour
-- works for any half-life, read from the settings at query time. The price is the bucket's width:
-- an event counts as if it happened at the start of its hour, off by at most 2^(1h / H) (0.1 % at
-- the default 30 days). A visitor has a few buckets per interest (most events fall in a few
-- sessions), so reads stay small: they filter on the primary key prefix (site, visitor).
--
-- Weights (one row per interest an event shows; each value counts once per event):
--   page / screen views: content group 1 (the site's path rules, or the page call's category),
--     section 1 (the first path segment: /blog/post -> blog), campaign term 1 (utm_term),
--     search 2 (the q / query / search / s parameter of the page URL, or the search engine keywords
--     of the referrer);
--   Products Searched: search 2 (properties.query);
--   ecommerce events (Segment's ecommerce spec), product category and product name, from the
--     event's properties and from each element of properties.products: viewed, clicked, listed,
--     filtered or cart viewed 1; added to the wishlist, shared or reviewed 2; added to the cart or
--     checkout started 3; order completed 5.
-- Values are trimmed and lower-cased, so "Shoes" and "shoes " are one interest (invalid UTF-8, say from a
-- broken URL escape, becomes U+FFFD, so reads never choke on it). Bots are left out.

CREATE TABLE IF NOT EXISTS {db}.interest_hours
(
    site_id LowCardinality(String),
    anonymous_id String,
    kind LowCardinality(String) COMMENT 'content_group | section | product_category | product | search | campaign_term',
    value String COMMENT 'the interest, trimmed and lower-cased',
    hour DateTime('UTC') COMMENT 'start of the hour the events happened in',
    weight SimpleAggregateFunction(sum, Float64) COMMENT 'sum of the events'' weights, not decayed',
    events SimpleAggregateFunction(sum, UInt64),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    retention_days SimpleAggregateFunction(max, UInt16) COMMENT 'the events'' retention_days (0: for good)',
    -- ?interest= looks a value up across a site's visitors: skip the granules without it
    INDEX idx_value value TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id, kind, value, hour)
TTL hour + toIntervalDay(if(retention_days = 0, 20000, retention_days))
SETTINGS index_granularity = 256
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.interest_hours_mv TO {db}.interest_hours AS
SELECT site_id, anonymous_id, hit.1 AS kind, hit.2 AS value, toStartOfHour(toDateTime(timestamp, 'UTC')) AS hour,
       hit.3 AS weight, toUInt64(1) AS events, timestamp AS last_seen, retention_days
FROM
(
    SELECT site_id, anonymous_id, timestamp, retention_days,
           type IN ('page', 'screen') AS is_view,
           toFloat64(multiIf(
               type != 'track', 0,
               event = 'Order Completed', 5,
               event IN ('Product Added', 'Checkout Started'), 3,
               event IN ('Product Added to Wishlist', 'Product Shared', 'Product Reviewed'), 2,
               event IN ('Product Viewed', 'Product Clicked', 'Product List Viewed', 'Product List Filtered',
                         'Cart Viewed'), 1,
               0)) AS shop,
           if(shop > 0, JSONExtractArrayRaw(properties, 'products'), []) AS products,
           arrayFilter(h -> h.2 != '', arrayMap(h -> (h.1, lowerUTF8(trim(toValidUTF8(h.2))), h.3), arrayConcat(
               if(is_view, [
                   ('content_group', toString(content_group), 1.),
                   -- a substring test first: most page views carry no category, and parsing costs
                   ('content_group', multiIf(
                       position(properties, '"category"') > 0, JSONExtractString(properties, 'category'),
                       position(extra, '"category"') > 0, JSONExtractString(extra, 'category'), ''), 1.),
                   ('section', arrayElement(splitByChar('/', page_path), 2), 1.),
                   ('campaign_term', utm_term, 1.),
                   ('search', search_term, 2.)
               ], []),
               if(is_view AND page_query != '', arrayMap(
                   kv -> ('search', decodeURLFormComponent(substring(kv, position(kv, '=') + 1)), 2.),
                   arrayFilter(kv -> splitByChar('=', kv)[1] IN ('q', 'query', 'search', 's'),
                               extractURLParameters(page_url))), []),
               if(type = 'track' AND event = 'Products Searched',
                  [('search', JSONExtractString(properties, 'query'), 2.)], []),
               if(shop > 0, [
                   ('product_category', JSONExtractString(properties, 'category'), shop),
                   ('product', JSONExtractString(properties, 'name'), shop)
               ], []),
               arrayMap(p -> ('product_category', JSONExtractString(p, 'category'), shop), products),
               arrayMap(p -> ('product', JSONExtractString(p, 'name'), shop), products)
           ))) AS found,
           -- one event counts each interest once (two products of one category: one hit); within one
           -- event a kind has one weight, so distinct (kind, value, weight) is distinct (kind, value)
           arrayDistinct(found) AS hits
    FROM {db}.events
    WHERE NOT is_bot AND anonymous_id != ''
      AND (type IN ('page', 'screen') OR (type = 'track' AND (shop > 0 OR event = 'Products Searched')))
)
ARRAY JOIN hits AS hit
;
CREATE VIEW IF NOT EXISTS {db}.contact_interests AS
SELECT i.site_id AS site_id,
       if(m.contact_id = '', concat('anon:', i.anonymous_id), m.contact_id) AS contact_id,
       i.kind AS kind, i.value AS value,
       round(sum(i.weight * exp2(-greatest(0, dateDiff('second', i.hour, now())) / (30 * 86400.))), 6) AS score,
       sum(i.weight) AS weight, sum(i.events) AS events,
       min(i.hour) AS first_seen, max(i.last_seen) AS last_seen
FROM {db}.interest_hours AS i
LEFT JOIN {db}.identity_map AS m ON m.site_id = i.site_id AND m.anonymous_id = i.anonymous_id
GROUP BY site_id, contact_id, kind, value
