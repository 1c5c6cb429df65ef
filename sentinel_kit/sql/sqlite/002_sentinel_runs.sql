-- Sentinel's own run history: one row per run, written when the run ends.
CREATE TABLE IF NOT EXISTS sentinel_runs (
    run_id       TEXT PRIMARY KEY,
    job          TEXT NOT NULL,
    status       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    keys_total   INTEGER NOT NULL,
    synced       INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    skipped      INTEGER NOT NULL,
    written      INTEGER NOT NULL,
    error        TEXT
);

CREATE INDEX IF NOT EXISTS sentinel_runs_job_started_idx ON sentinel_runs (job, started_at);
