-- trailmark schema, version 28: smaller compressed blocks in the tables the journey read looks up by
-- key (issue 15). Same rules as 001: `{db}` is the database, statements separated by lines holding
-- only ';', every statement idempotent.
--
-- Why: `/v1/journeys/{contact}` reads a few granules of one contact from each of these tables, but a
-- column is compressed in blocks of 64 KiB to 1 MiB, and a granule is read by decompressing its
-- whole block, column by column: at 10M events a journey decompressed ~500 blocks (about 0.3 ms of
-- CPU per column read per query). Blocks of 4-16 KiB cut the journey's CPU by about 15 % (find and
-- parts, measured on copies of these tables at 10M events: bench/RESULTS.md) for 6 % more disk, and
-- left full scans of them unchanged within the noise; blocks of 1-4 KiB saved 23 % but made scans
-- 10-50 % dearer and the tables 12 % larger.
--
-- A setting applies to the parts written from then on (the builder's inserts and every merge); parts
-- stored before keep their blocks until a merge rewrites them (`OPTIMIZE TABLE ... FINAL` does it at
-- once, at the cost of rewriting the table: not done here, so an upgrade stays instant).

ALTER TABLE {db}.sessions_data MODIFY SETTING min_compress_block_size = 4096, max_compress_block_size = 16384
;
ALTER TABLE {db}.touchpoints_data MODIFY SETTING min_compress_block_size = 4096, max_compress_block_size = 16384
;
ALTER TABLE {db}.stage_transitions_data MODIFY SETTING min_compress_block_size = 4096, max_compress_block_size = 16384
;
ALTER TABLE {db}.contacts_data MODIFY SETTING min_compress_block_size = 4096, max_compress_block_size = 16384
;
ALTER TABLE {db}.contact_handles MODIFY SETTING min_compress_block_size = 4096, max_compress_block_size = 16384
;
ALTER TABLE {db}.identities_data MODIFY SETTING min_compress_block_size = 4096, max_compress_block_size = 16384
;
ALTER TABLE {db}.contact_devices MODIFY SETTING min_compress_block_size = 4096, max_compress_block_size = 16384
