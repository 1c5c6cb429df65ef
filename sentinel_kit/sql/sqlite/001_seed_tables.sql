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
