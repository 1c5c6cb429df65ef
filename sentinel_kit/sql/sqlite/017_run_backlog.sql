-- Run history for plots and alerts: the backlog a whole run left for its sync and shard
-- (users not attempted within one interval of the schedule, and the oldest attempt).
-- NULL for dry runs, re-runs of a few users, and runs recorded before this migration.
ALTER TABLE sentinel_runs ADD COLUMN stale_users INTEGER;
ALTER TABLE sentinel_runs ADD COLUMN oldest_attempt_at TEXT;
