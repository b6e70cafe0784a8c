-- trailmark schema, version 31: the devices that share a contact, kept as the journey builder links
-- them (issue 15). Same rules as 001: `{db}` is the database, statements separated by lines holding
-- only ';', every statement idempotent.
--
-- Why: funnels, attribution and the insights group a contact's rows by device, except for the few
-- devices whose contact has (or had) other devices, which are grouped by their current contact. The
-- reads found those devices from every row of contact_devices and their current contact from
-- identities_data, in every read: 0.85 s of CPU at 100M events (4.2M links, 399,300 such devices),
-- a quarter of the funnel's and attribution's time (bench/RESULTS.md, 2026-12-06).
--
-- Here are those devices and every link each of them has: each row is one (device, contact) link with
-- its latest time, as identities_data holds it. A device's current contact is its link of the latest
-- time, as identity_map's argMax. The journey builder writes it after each batch's identities
-- (journey_builder/repository.py, ``share_devices``): the devices of each contact the batch gave a
-- new device to that now has two or more devices in contact_devices, and the batch's devices already
-- here, with all their links read again from identities_data. A contact's devices, once two, stay here: like
-- contact_devices, which keeps every link made, this is a superset of the devices whose current
-- contact has several, and a device alone on its contact reads the same grouped either way.
--
-- Two builders linking two devices of one new contact at the same moment each write after their
-- own identities are stored, so the later of the two sees both devices (on a cluster, once the
-- Distributed tables' inserts have reached the shards). An erasure deletes a subject's rows here as
-- in every table with an anonymous_id or contact_id.

CREATE TABLE IF NOT EXISTS {db}.shared_devices
(
    site_id LowCardinality(String),
    anonymous_id String,
    contact_id String COMMENT 'one contact the device was linked to',
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'the latest time of that link',
    device UInt64 MATERIALIZED cityHash64(anonymous_id) COMMENT 'cityHash64(anonymous_id): the device, as the reads group it'
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id, contact_id)
SETTINGS index_granularity = 1024, merge_selector_base = 10
;
-- existing installs: the devices of every contact with two or more, and all their links
INSERT INTO {db}.shared_devices
SELECT site_id, anonymous_id, contact_id, max(last_seen)
FROM {db}.identities_data
WHERE (site_id, anonymous_id) IN (
    SELECT site_id, anonymous_id FROM {db}.contact_devices
    WHERE (site_id, contact_id) IN (
        SELECT site_id, contact_id FROM {db}.contact_devices
        GROUP BY site_id, contact_id HAVING min(anonymous_id) != max(anonymous_id)))
GROUP BY site_id, anonymous_id, contact_id
