-- Run history for status, /healthz and alerts: why a run's skipped keys were not asked
-- (parked by key health, or without the access the sync needs) and what its counts count
-- (the report's unit). NULL for runs recorded before this migration.
ALTER TABLE sentinel_runs ADD COLUMN skipped_parked INTEGER;
ALTER TABLE sentinel_runs ADD COLUMN skipped_access INTEGER;
ALTER TABLE sentinel_runs ADD COLUMN unit TEXT;
