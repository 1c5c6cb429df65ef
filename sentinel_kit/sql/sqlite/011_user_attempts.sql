-- Fair order (sentinel-kit 0.2): when each user was last attempted, so every run requests
-- the users in order of their last attempt (never attempted first). `user_id` is the text
-- form of user_keys.user_id (an app may use INTEGER ids); times are UTC ISO-8601 text.
CREATE TABLE IF NOT EXISTS sentinel_user_attempts (
    user_id       TEXT PRIMARY KEY,
    attempted_at  TEXT NOT NULL,
    job           TEXT
);
CREATE INDEX IF NOT EXISTS sentinel_user_attempts_attempted_at
    ON sentinel_user_attempts (attempted_at);
