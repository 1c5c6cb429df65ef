-- Key health: parked keys (dead, suspended, cooling down). No key material: `fingerprint`
-- is a hash of the stored ciphertext, so re-saving a key (a new ciphertext) un-parks it.
CREATE TABLE IF NOT EXISTS sentinel_key_health (
    key_id       TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('dead', 'suspended', 'cooldown')),
    last_code    INTEGER,
    reason       TEXT,
    since        TEXT NOT NULL,
    retry_after  TEXT
);
