-- Only the service role may reach sentinel's tables and functions. On Supabase, `anon` and
-- `authenticated` (the public API key and signed-in users) get default privileges on
-- everything in `public`: row-level security with no policy shuts them out of every row,
-- and the explicit revokes remove the privileges themselves. Roles that do not exist here
-- (plain Postgres) are skipped.
ALTER TABLE sentinel_migrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE sentinel_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE sentinel_key_health ENABLE ROW LEVEL SECURITY;
ALTER TABLE sentinel_leases ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON FUNCTION sentinel_claim_lease(text, text, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_renew_lease(text, text, bigint, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_release_lease(text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_upsert_user_data(text, bigint, jsonb) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON TABLE sentinel_migrations, sentinel_runs, '
                           'sentinel_key_health, sentinel_leases FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION sentinel_claim_lease(text, text, double precision), '
                           'sentinel_renew_lease(text, text, bigint, double precision), '
                           'sentinel_release_lease(text, text, bigint), '
                           'sentinel_upsert_user_data(text, bigint, jsonb) FROM %I', r);
        END IF;
    END LOOP;
    -- The service role keeps everything (it bypasses RLS on Supabase).
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON TABLE sentinel_migrations, sentinel_runs, sentinel_key_health,
            sentinel_leases TO service_role;
        GRANT EXECUTE ON FUNCTION sentinel_claim_lease(text, text, double precision),
            sentinel_renew_lease(text, text, bigint, double precision),
            sentinel_release_lease(text, text, bigint),
            sentinel_upsert_user_data(text, bigint, jsonb) TO service_role;
    END IF;
END
$$;
