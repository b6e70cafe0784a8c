-- trailmark schema, version 4: dead-letter replay (`trailmark dead-letters replay`). Same rules as 001:
-- `{db}` is the database, statements separated by lines holding only ';', every statement idempotent.
-- A dead letter's id is a hash of the row (no writer has to make one, and rows stored before this
-- migration have it too). Each replay of a dead letter is a row of dead_letter_replays: what was sent
-- where, and when; the dead letters themselves are never rewritten.

ALTER TABLE {db}.dead_letters
    ADD COLUMN IF NOT EXISTS id String ALIAS lower(hex(cityHash64(stage, reason, payload, failed_at)))
    COMMENT 'stable id of the dead letter (a hash of the row): `trailmark dead-letters show ID`'
;
CREATE TABLE IF NOT EXISTS {db}.dead_letter_replays
(
    dead_letter_id String COMMENT 'dead_letters.id',
    replay_id String COMMENT 'one `trailmark dead-letters replay` run',
    replayed_at DateTime64(3, 'UTC'),
    topic String COMMENT 'where the payload was sent: the raw topic, or the enriched one',
    records UInt32 COMMENT 'records sent (a raw batch carries several events)',
    message_ids Array(String) COMMENT 'messageIds of the events sent; the journey builder stores each once'
)
ENGINE = MergeTree
ORDER BY (dead_letter_id, replayed_at)
