-- What each key can do (unreleased), as Torn's /key/info answered it: the access level
-- (1 public, 2 minimal, 3 limited, 4 full; 0 unknown) and its type, the owner's player id
-- and faction, and whether the owner has faction API access. `fingerprint` hashes the
-- ciphertext that was checked, so a re-saved key is unknown again. No key material. Times
-- are UTC ISO-8601 text; faction_access is 0 or 1.
CREATE TABLE IF NOT EXISTS sentinel_key_info (
    key_id          TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    access_level    INTEGER NOT NULL DEFAULT 0,
    access_type     TEXT NOT NULL DEFAULT '',
    player_id       INTEGER,
    faction_id      INTEGER,
    faction_access  INTEGER NOT NULL DEFAULT 0,
    checked_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sentinel_key_info_faction ON sentinel_key_info (faction_id);
