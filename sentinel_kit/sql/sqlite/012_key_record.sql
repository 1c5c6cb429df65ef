-- An incident is not mass death (unreleased). Torn has answered code 2 ("Incorrect
-- key") for valid keys during incidents, so the sync keeps which keys worked: each key's last
-- success, and its strikes (runs with no success anywhere in which Torn answered code 2 for
-- it, an hour apart or more; the third parks it). `fingerprint` hashes the ciphertext the
-- facts are about, so a re-saved key starts fresh. Times are UTC ISO-8601 text.
CREATE TABLE IF NOT EXISTS sentinel_key_record (
    key_id           TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    succeeded_at     TEXT,
    strikes          INTEGER NOT NULL DEFAULT 0,
    first_strike_at  TEXT,
    last_strike_at   TEXT
);
-- The run that parked each key (sentinel_key_health), so `keys health --reset --run RUN_ID`
-- un-parks what one run parked. Written with the park, deleted with it.
CREATE TABLE IF NOT EXISTS sentinel_key_parks (
    key_id       TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    parked_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sentinel_key_parks_run_id ON sentinel_key_parks (run_id);
