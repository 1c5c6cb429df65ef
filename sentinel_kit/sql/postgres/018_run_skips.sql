-- Run history for status, /healthz and alerts: why a run's skipped keys were not asked
-- (parked by key health, or without the access the sync needs) and what its counts count
-- (the report's unit). NULL for runs recorded before this migration.
ALTER TABLE sentinel_runs ADD COLUMN IF NOT EXISTS skipped_parked integer;
ALTER TABLE sentinel_runs ADD COLUMN IF NOT EXISTS skipped_access integer;
ALTER TABLE sentinel_runs ADD COLUMN IF NOT EXISTS unit text;
