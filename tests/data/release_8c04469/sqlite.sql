-- `sentinel-kit migrate --print` (sqlite) of the last release, commit 8c04469, verbatim below:
-- its sentinel_kit/sql/ files rendered by that release's render_script. Used by
-- tests/stores/test_upgrade.py to set up a database as that release left it.
-- sentinel-kit migrations (sqlite); safe to run more than once.
CREATE TABLE IF NOT EXISTS sentinel_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')));

-- 001_seed_tables.sql
-- The original worker's tables, created only when missing: an existing user_keys or
-- user_data is never altered. SQLite keeps timestamps as ISO-8601 text in UTC.
CREATE TABLE IF NOT EXISTS user_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    api_key     TEXT NOT NULL,
    created_at  TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);

-- Keys are read in (user_id, id) order, page by page.
CREATE INDEX IF NOT EXISTS user_keys_user_id_id_idx ON user_keys (user_id, id);

CREATE TABLE IF NOT EXISTS user_data (
    user_id     TEXT PRIMARY KEY,
    name        TEXT,
    player_id   INTEGER,
    updated_at  TEXT
);
INSERT INTO sentinel_migrations (name) VALUES ('001_seed_tables.sql') ON CONFLICT DO NOTHING;

-- 002_sentinel_runs.sql
-- Sentinel's own run history: one row per run. (job, scheduled_for) is unique so two
-- replicas can never both run the same scheduled tick.
CREATE TABLE IF NOT EXISTS sentinel_runs (
    run_id         TEXT PRIMARY KEY,
    job            TEXT NOT NULL,
    scheduled_for  TEXT,
    holder         TEXT,
    fence          INTEGER,
    status         TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    keys_total     INTEGER NOT NULL DEFAULT 0,
    synced         INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    skipped        INTEGER NOT NULL DEFAULT 0,
    written        INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    UNIQUE (job, scheduled_for)
);

CREATE INDEX IF NOT EXISTS sentinel_runs_job_started_idx ON sentinel_runs (job, started_at);
INSERT INTO sentinel_migrations (name) VALUES ('002_sentinel_runs.sql') ON CONFLICT DO NOTHING;

-- 003_sentinel_key_health.sql
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
INSERT INTO sentinel_migrations (name) VALUES ('003_sentinel_key_health.sql') ON CONFLICT DO NOTHING;

-- 004_sentinel_leases.sql
-- Leases with fencing tokens: `fence` only ever grows, so a token identifies one tenure.
-- `expires_at` is seconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS sentinel_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT,
    fence       INTEGER NOT NULL DEFAULT 0,
    expires_at  REAL
);
INSERT INTO sentinel_migrations (name) VALUES ('004_sentinel_leases.sql') ON CONFLICT DO NOTHING;
