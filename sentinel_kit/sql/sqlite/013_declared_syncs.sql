-- Fair order per sync (unreleased): when each unit (a user) was last attempted by
-- each sync, so one sync's attempts never reorder another's. sync-users keeps
-- sentinel_user_attempts (which replicas of 0.2 read and write); every other sync keeps its
-- attempts here. Times are UTC ISO-8601 text.
CREATE TABLE IF NOT EXISTS sentinel_unit_attempts (
    sync          TEXT NOT NULL,
    unit_id       TEXT NOT NULL,
    attempted_at  TEXT NOT NULL,
    PRIMARY KEY (sync, unit_id)
);
CREATE INDEX IF NOT EXISTS sentinel_unit_attempts_attempted_at
    ON sentinel_unit_attempts (sync, attempted_at);
-- Key access by sync: a key whose access level is too low for one sync's endpoint (Torn
-- code 16) is marked for that sync only, until the key is re-saved (`fingerprint`).
CREATE TABLE IF NOT EXISTS sentinel_key_access (
    key_id       TEXT NOT NULL,
    sync         TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    code         INTEGER NOT NULL,
    since        TEXT NOT NULL,
    PRIMARY KEY (key_id, sync)
);
