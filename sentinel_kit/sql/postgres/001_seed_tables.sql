-- The original worker's tables, created only when missing. An existing user_keys or
-- user_data (yours, on Supabase) is never altered: not even an index is added to it.
--
-- Tables created here are created locked, like sentinel's own: row-level security on with
-- no policy (only the table owner and roles that bypass RLS, such as Supabase's
-- service_role, see rows) and no privileges for Supabase's API roles `anon` and
-- `authenticated`, which Supabase's default privileges would otherwise give ALL on every
-- new table in `public` (anyone with the project's public anon key could read every
-- encrypted key). This locking was added after the first release: it affects databases
-- created from now on. Databases where this migration already ran are checked by
-- `sentinel-kit migrate` and `sentinel-kit doctor`, and locked by `migrate --lock-tables`.
DO $$
DECLARE
    created text[] := '{}';
    t text;
    r text;
BEGIN
    IF to_regclass('user_keys') IS NULL THEN
        CREATE TABLE user_keys (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id     varchar NOT NULL,
            api_key     text NOT NULL,
            created_at  timestamp DEFAULT now()
        );
        -- Keys are read in (user_id, id) order, page by page.
        CREATE INDEX user_keys_user_id_id_idx ON user_keys (user_id, id);
        created := created || 'user_keys'::text;
    END IF;
    IF to_regclass('user_data') IS NULL THEN
        CREATE TABLE user_data (
            user_id     varchar PRIMARY KEY,
            name        varchar,
            player_id   integer,
            updated_at  timestamp
        );
        created := created || 'user_data'::text;
    END IF;
    FOREACH t IN ARRAY created LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON TABLE %I FROM PUBLIC', t);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', t, r);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT ALL ON TABLE %I TO service_role', t);
        END IF;
    END LOOP;
END
$$;
