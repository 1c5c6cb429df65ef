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
