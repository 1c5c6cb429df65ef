-- Job state for the health rule and for alerts (sentinel-kit 0.2). `first_tick` is the first
-- tick a daemon scheduled for the job: a job with no counted run yet is healthy until
-- first_tick + timeout_s (`status` runs in another process than the daemon, so this lives
-- here). `alert_state` is what the last alert announced; it changes only through
-- sentinel_set_alert_state, a compare-and-set, so a restart or a second replica never
-- repeats an alert.
CREATE TABLE IF NOT EXISTS sentinel_jobs (
    job               text PRIMARY KEY,
    schedule          text,
    timeout_s         double precision,
    first_tick        timestamptz,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    alert_state       text NOT NULL DEFAULT 'healthy' CHECK (alert_state IN ('healthy', 'unhealthy')),
    alert_as_of       timestamptz,
    alert_changed_at  timestamptz
);

-- Insert or refresh a job; the first first_tick ever registered is kept and returned.
CREATE OR REPLACE FUNCTION sentinel_register_job(
    p_job text, p_schedule text, p_timeout_s double precision, p_first_tick timestamptz
)
RETURNS timestamptz
LANGUAGE sql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
    INSERT INTO sentinel_jobs (job, schedule, timeout_s, first_tick)
    VALUES (p_job, p_schedule, p_timeout_s, p_first_tick)
    ON CONFLICT (job) DO UPDATE
       SET schedule = EXCLUDED.schedule,
           timeout_s = EXCLUDED.timeout_s,
           first_tick = COALESCE(sentinel_jobs.first_tick, EXCLUDED.first_tick),
           updated_at = now()
    RETURNING first_tick;
$$;

-- Compare-and-set the alert state. True only for the one caller that changed it: the
-- state must differ, and p_as_of (the end of the run judged) must be newer than the one the
-- current state came from, so a replica reading an older run never flips it back.
CREATE OR REPLACE FUNCTION sentinel_set_alert_state(p_job text, p_state text, p_as_of timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
BEGIN
    INSERT INTO sentinel_jobs (job) VALUES (p_job) ON CONFLICT (job) DO NOTHING;
    UPDATE sentinel_jobs
       SET alert_state = p_state,
           alert_as_of = p_as_of,
           alert_changed_at = clock_timestamp()
     WHERE job = p_job
       AND alert_state <> p_state
       AND (alert_as_of IS NULL OR alert_as_of < p_as_of);
    RETURN FOUND;
END
$$;

-- Only the service role reaches it (see 004_sentinel_security.sql).
ALTER TABLE sentinel_jobs ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON TABLE sentinel_jobs FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_register_job(text, text, double precision, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_set_alert_state(text, text, timestamptz) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON TABLE sentinel_jobs FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION '
                           'sentinel_register_job(text, text, double precision, timestamptz), '
                           'sentinel_set_alert_state(text, text, timestamptz) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON TABLE sentinel_jobs TO service_role;
        GRANT EXECUTE ON FUNCTION
            sentinel_register_job(text, text, double precision, timestamptz),
            sentinel_set_alert_state(text, text, timestamptz) TO service_role;
    END IF;
END
$$;
