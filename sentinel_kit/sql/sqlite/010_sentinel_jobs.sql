-- Job state for the health rule and for alerts (sentinel-kit 0.2). `first_tick` is the first
-- tick a daemon scheduled for the job: a job with no counted run yet is healthy until
-- first_tick + timeout_s. `alert_state` is what the last alert announced; it changes only by
-- compare-and-set, so a restart or a second replica never repeats an alert.
CREATE TABLE IF NOT EXISTS sentinel_jobs (
    job               TEXT PRIMARY KEY,
    schedule          TEXT,
    timeout_s         REAL,
    first_tick        TEXT,
    registered_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    alert_state       TEXT NOT NULL DEFAULT 'healthy' CHECK (alert_state IN ('healthy', 'unhealthy')),
    alert_as_of       TEXT,
    alert_changed_at  TEXT
);
