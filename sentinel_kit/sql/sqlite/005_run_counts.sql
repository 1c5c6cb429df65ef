-- Run history for the health rule: keys a time-boxed run left for the next one
-- (`deferred`), and whether the run speaks for the job's health (`counted` is 0 for
-- re-runs of a few users and for runs a person interrupted).
ALTER TABLE sentinel_runs ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sentinel_runs ADD COLUMN counted INTEGER NOT NULL DEFAULT 1;
