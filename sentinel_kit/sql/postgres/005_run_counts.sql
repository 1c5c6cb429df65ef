-- Run history for the health rule: keys a time-boxed run left for the next one
-- (`deferred`), and whether the run speaks for the job's health (`counted` is false for
-- re-runs of a few users and for runs a person interrupted).
ALTER TABLE sentinel_runs ADD COLUMN IF NOT EXISTS deferred integer NOT NULL DEFAULT 0;
ALTER TABLE sentinel_runs ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT true;
