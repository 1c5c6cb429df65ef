-- Incremental syncs (unreleased): how far each unit of a sync has read a Torn log. A sync
-- declared with cursor= asks each unit from here (Torn's `from`, inclusive); the cursor is
-- the greatest entry time (a Unix timestamp) written, and moves in the same transaction
-- as the rows it covers. Times are UTC ISO-8601 text.
CREATE TABLE IF NOT EXISTS sentinel_cursors (
    sync        TEXT NOT NULL,
    unit_id     TEXT NOT NULL,
    cursor      INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (sync, unit_id)
);
