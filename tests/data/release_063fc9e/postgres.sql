-- `sentinel-kit migrate --print` (postgres) of the 0.2 release, commit 063fc9e, verbatim below:
-- its sentinel_kit/sql/ files (001-011) rendered by that release's render_script. Used by
-- tests/stores/test_upgrade.py to set up a database as that release left it.
-- sentinel-kit migrations (postgres); safe to run more than once.
CREATE TABLE IF NOT EXISTS sentinel_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());

-- 001_seed_tables.sql
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
INSERT INTO sentinel_migrations (name) VALUES ('001_seed_tables.sql') ON CONFLICT DO NOTHING;

-- 002_sentinel_tables.sql
-- Sentinel's own tables. Timestamps are timestamptz (UTC on the wire).

-- Run history: one row per run; (job, scheduled_for) is unique so two replicas can never
-- both run the same scheduled tick.
CREATE TABLE IF NOT EXISTS sentinel_runs (
    run_id         uuid PRIMARY KEY,
    job            text NOT NULL,
    scheduled_for  timestamptz,
    holder         text,
    fence          bigint,
    status         text NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    keys_total     integer NOT NULL DEFAULT 0,
    synced         integer NOT NULL DEFAULT 0,
    failed         integer NOT NULL DEFAULT 0,
    skipped        integer NOT NULL DEFAULT 0,
    written        integer NOT NULL DEFAULT 0,
    error          text,
    UNIQUE (job, scheduled_for)
);
CREATE INDEX IF NOT EXISTS sentinel_runs_job_started_idx ON sentinel_runs (job, started_at);

-- Key health: parked keys. No key material: `fingerprint` hashes the stored ciphertext,
-- so re-saving a key (a new ciphertext) un-parks it.
CREATE TABLE IF NOT EXISTS sentinel_key_health (
    key_id       text PRIMARY KEY,
    user_id      text NOT NULL,
    fingerprint  text NOT NULL,
    state        text NOT NULL CHECK (state IN ('dead', 'suspended', 'cooldown')),
    last_code    integer,
    reason       text,
    since        timestamptz NOT NULL,
    retry_after  timestamptz
);

-- Leases with fencing tokens: `fence` only ever grows, so a token identifies one tenure.
CREATE TABLE IF NOT EXISTS sentinel_leases (
    name        text PRIMARY KEY,
    holder      text,
    fence       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz
);
INSERT INTO sentinel_migrations (name) VALUES ('002_sentinel_tables.sql') ON CONFLICT DO NOTHING;

-- 003_sentinel_functions.sql
-- Atomic lease operations and the fenced upsert. SECURITY INVOKER: they run with the
-- caller's rights (the service role on Supabase), and are revoked from everyone else.

-- Claim `p_name` for `p_holder` for `p_ttl_s` seconds. Returns the new fencing token, or
-- NULL when another holder's lease has not expired.
CREATE OR REPLACE FUNCTION sentinel_claim_lease(p_name text, p_holder text, p_ttl_s double precision)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_fence bigint;
BEGIN
    INSERT INTO sentinel_leases (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    UPDATE sentinel_leases
       SET holder = p_holder,
           fence = fence + 1,
           expires_at = clock_timestamp() + make_interval(secs => p_ttl_s)
     WHERE name = p_name
       AND (holder IS NULL OR holder = p_holder OR expires_at <= clock_timestamp())
    RETURNING fence INTO v_fence;
    RETURN v_fence;
END
$$;

-- Extend a lease still held under `p_fence`. False when it was lost (stolen after expiry).
CREATE OR REPLACE FUNCTION sentinel_renew_lease(p_name text, p_holder text, p_fence bigint, p_ttl_s double precision)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE sentinel_leases
       SET expires_at = clock_timestamp() + make_interval(secs => p_ttl_s)
     WHERE name = p_name AND holder = p_holder AND fence = p_fence;
    RETURN FOUND;
END
$$;

-- Give a lease up. False when it was no longer ours.
CREATE OR REPLACE FUNCTION sentinel_release_lease(p_name text, p_holder text, p_fence bigint)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE sentinel_leases
       SET holder = NULL, expires_at = NULL
     WHERE name = p_name AND holder = p_holder AND fence = p_fence;
    RETURN FOUND;
END
$$;

-- Upsert user_data rows (a JSON array of {user_id, name, player_id, updated_at}) only if
-- `p_fence` is still the current token of lease `p_lease`, in one transaction. The lease
-- row is locked FOR SHARE, so a concurrent claim waits until this write is done. A stale
-- token raises SQLSTATE PT409 (PostgREST answers it with HTTP 409).
CREATE OR REPLACE FUNCTION sentinel_upsert_user_data(p_lease text, p_fence bigint, p_rows jsonb)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM 1 FROM sentinel_leases WHERE name = p_lease AND fence = p_fence FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sentinel: stale fencing token % for lease %', p_fence, p_lease
            USING ERRCODE = 'PT409';
    END IF;
    INSERT INTO user_data (user_id, name, player_id, updated_at)
    SELECT DISTINCT ON (r->>'user_id')
           r->>'user_id',
           r->>'name',
           (r->>'player_id')::integer,
           ((r->>'updated_at')::timestamptz AT TIME ZONE 'UTC')
      FROM jsonb_array_elements(p_rows) AS r
     ORDER BY r->>'user_id'
    ON CONFLICT (user_id) DO UPDATE
       SET name = EXCLUDED.name,
           player_id = EXCLUDED.player_id,
           updated_at = EXCLUDED.updated_at;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
INSERT INTO sentinel_migrations (name) VALUES ('003_sentinel_functions.sql') ON CONFLICT DO NOTHING;

-- 004_sentinel_security.sql
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
INSERT INTO sentinel_migrations (name) VALUES ('004_sentinel_security.sql') ON CONFLICT DO NOTHING;

-- 005_run_counts.sql
-- Run history for the health rule: keys a time-boxed run left for the next one
-- (`deferred`), and whether the run speaks for the job's health (`counted` is false for
-- re-runs of a few users and for runs a person interrupted).
ALTER TABLE sentinel_runs ADD COLUMN IF NOT EXISTS deferred integer NOT NULL DEFAULT 0;
ALTER TABLE sentinel_runs ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT true;
INSERT INTO sentinel_migrations (name) VALUES ('005_run_counts.sql') ON CONFLICT DO NOTHING;

-- 006_pinned_functions.sql
-- Sentinel's functions again (CREATE OR REPLACE keeps their grants), now:
--
-- * SECURITY INVOKER, said out loud: they run with the caller's rights (the service role on
--   Supabase), so they can never do more than the caller could do with plain statements.
-- * with a pinned search_path (Supabase's linter: function_search_path_mutable). `public`
--   is where sentinel's tables live (the schema Supabase's Data API exposes); `pg_temp`
--   comes last so a caller's temporary table can never stand in for one of ours
--   (PostgreSQL docs, "Writing SECURITY DEFINER Functions Safely"); pg_catalog is always
--   searched first.
-- * typed by the app's own tables: the fenced upsert casts each JSON row to the columns of
--   user_data with jsonb_populate_recordset, so `user_id` may be text, varchar, uuid or
--   bigint and `updated_at` timestamp or timestamptz. Times arrive as UTC ISO-8601 text:
--   a timestamptz column reads the offset, a timestamp column keeps the UTC wall time, so
--   the session's TimeZone never matters.

CREATE OR REPLACE FUNCTION sentinel_claim_lease(p_name text, p_holder text, p_ttl_s double precision)
RETURNS bigint
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_fence bigint;
BEGIN
    INSERT INTO sentinel_leases (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    UPDATE sentinel_leases
       SET holder = p_holder,
           fence = fence + 1,
           expires_at = clock_timestamp() + make_interval(secs => p_ttl_s)
     WHERE name = p_name
       AND (holder IS NULL OR holder = p_holder OR expires_at <= clock_timestamp())
    RETURNING fence INTO v_fence;
    RETURN v_fence;
END
$$;

CREATE OR REPLACE FUNCTION sentinel_renew_lease(p_name text, p_holder text, p_fence bigint, p_ttl_s double precision)
RETURNS boolean
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
BEGIN
    UPDATE sentinel_leases
       SET expires_at = clock_timestamp() + make_interval(secs => p_ttl_s)
     WHERE name = p_name AND holder = p_holder AND fence = p_fence;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION sentinel_release_lease(p_name text, p_holder text, p_fence bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
BEGIN
    UPDATE sentinel_leases
       SET holder = NULL, expires_at = NULL
     WHERE name = p_name AND holder = p_holder AND fence = p_fence;
    RETURN FOUND;
END
$$;

-- Upsert user_data rows (a JSON array of {user_id, name, player_id, updated_at}) only if
-- `p_fence` is still the current token of lease `p_lease`, in one transaction. The lease
-- row is locked FOR SHARE, so a concurrent claim waits until this write is done. A stale
-- token raises SQLSTATE PT409 (PostgREST answers it with HTTP 409). The last row of a
-- user wins when one appears twice (ON CONFLICT cannot touch a row twice).
CREATE OR REPLACE FUNCTION sentinel_upsert_user_data(p_lease text, p_fence bigint, p_rows jsonb)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM 1 FROM sentinel_leases WHERE name = p_lease AND fence = p_fence FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sentinel: stale fencing token % for lease %', p_fence, p_lease
            USING ERRCODE = 'PT409';
    END IF;
    INSERT INTO user_data (user_id, name, player_id, updated_at)
    SELECT DISTINCT ON (r.user_id) r.user_id, r.name, r.player_id, r.updated_at
      FROM jsonb_populate_recordset(NULL::user_data, p_rows) WITH ORDINALITY AS r
     ORDER BY r.user_id, r.ordinality DESC
    ON CONFLICT (user_id) DO UPDATE
       SET name = EXCLUDED.name,
           player_id = EXCLUDED.player_id,
           updated_at = EXCLUDED.updated_at;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
INSERT INTO sentinel_migrations (name) VALUES ('006_pinned_functions.sql') ON CONFLICT DO NOTHING;

-- 007_security_report.sql
-- What doctor and migrate need to know about who can reach sentinel's objects, as one JSON
-- document, so that Supabase's Data API (an RPC as the service role) sees the same as a
-- direct connection. It reads the catalog only; the rules (open tables, Supabase's linter
-- checks, supported column types) are applied by sentinel-kit itself.
--
--   api_roles  Supabase's API roles that exist here (`anon`, `authenticated`).
--   tables     user_keys, user_data and every sentinel_ table: row-level security, its
--              policies, whether it applies to the caller (row_security_active: not for
--              the owner or a role with BYPASSRLS), the table privileges each API role
--              holds (directly, through PUBLIC or through a role it is a member of), and
--              the columns with their types.
--   functions  every sentinel_ function: SECURITY DEFINER or not, its pinned search_path
--              (null when it has none), and the API roles that may execute it.
CREATE OR REPLACE FUNCTION sentinel_security_report()
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
WITH api_roles AS (
    SELECT r.oid, r.rolname::text AS name
      FROM pg_catalog.pg_roles r
     WHERE r.rolname IN ('anon', 'authenticated')
), tables AS (
    SELECT c.oid, c.relname::text AS name, c.relrowsecurity AS rls
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'public'::regnamespace
       AND c.relkind IN ('r', 'p')
       AND (c.relname IN ('user_keys', 'user_data') OR c.relname LIKE 'sentinel\_%')
), functions AS (
    SELECT p.oid, p.proname::text AS name, p.prosecdef,
           pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
           (SELECT substr(cfg, length('search_path=') + 1)
              FROM unnest(p.proconfig) AS cfg
             WHERE cfg LIKE 'search\_path=%'
             LIMIT 1) AS search_path
      FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = 'public'::regnamespace
       AND p.proname LIKE 'sentinel\_%'
)
SELECT jsonb_build_object(
    'schema', 'public',
    'api_roles', (SELECT coalesce(jsonb_agg(r.name ORDER BY r.name), '[]'::jsonb) FROM api_roles r),
    'tables', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'name', t.name,
                   'rls', t.rls,
                   'policies', (SELECT count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = t.oid),
                   'rls_applies_to_caller', pg_catalog.row_security_active(t.oid),
                   'grants', (
                       SELECT coalesce(jsonb_object_agg(r.name, (
                                  SELECT coalesce(jsonb_agg(v.privilege ORDER BY v.privilege), '[]'::jsonb)
                                    FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                                                      'TRUNCATE', 'REFERENCES', 'TRIGGER'])
                                         AS v(privilege)
                                   WHERE pg_catalog.has_table_privilege(r.oid, t.oid, v.privilege)
                              )), '{}'::jsonb)
                         FROM api_roles r),
                   'columns', (
                       SELECT coalesce(jsonb_agg(jsonb_build_object(
                                  'name', a.attname::text,
                                  'type', pg_catalog.format_type(a.atttypid, a.atttypmod)
                              ) ORDER BY a.attnum), '[]'::jsonb)
                         FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped)
               ) ORDER BY t.name), '[]'::jsonb)
          FROM tables t),
    'functions', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'name', f.name,
                   'args', f.args,
                   'security_definer', f.prosecdef,
                   'search_path', f.search_path,
                   'executable_by', (
                       SELECT coalesce(jsonb_agg(r.name ORDER BY r.name), '[]'::jsonb)
                         FROM api_roles r
                        WHERE pg_catalog.has_function_privilege(r.oid, f.oid, 'EXECUTE'))
               ) ORDER BY f.name, f.args), '[]'::jsonb)
          FROM functions f)
);
$$;

REVOKE ALL ON FUNCTION sentinel_security_report() FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION sentinel_security_report() FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION sentinel_security_report() TO service_role;
    END IF;
END
$$;
INSERT INTO sentinel_migrations (name) VALUES ('007_security_report.sql') ON CONFLICT DO NOTHING;

-- 008_key_rotation.sql
-- Secret rotation (`sentinel-kit keys rotate`): replace ciphertexts re-encrypted under the
-- new ENCRYPTION_KEY, in one transaction per batch.
--
-- p_changes is a JSON array of {key_id, old, new, old_fp, new_fp}. A key is replaced only
-- while it still holds `old` (compare-and-swap): a key the app re-saved in between keeps the
-- app's value. A parked key (sentinel_key_health, keyed by a fingerprint of the
-- ciphertext) moves to the new fingerprint in the same transaction, or the rotation would
-- un-park every dead key and the next sync would call Torn with them again. `key_id` is
-- cast to the type of user_keys.id (uuid, text or bigint) through the table's own row type,
-- so the primary key's index is used. Returns how many keys were replaced.
CREATE OR REPLACE FUNCTION sentinel_replace_ciphertexts(p_changes jsonb)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH changes AS (
        SELECT k.id, c->>'key_id' AS key_id, c->>'old' AS old_ct, c->>'new' AS new_ct,
               c->>'old_fp' AS old_fp, c->>'new_fp' AS new_fp
          FROM jsonb_array_elements(p_changes) AS c
         CROSS JOIN LATERAL jsonb_populate_record(
               NULL::user_keys, jsonb_build_object('id', c->'key_id')) AS k
    ), swapped AS (
        UPDATE user_keys AS u
           SET api_key = ch.new_ct
          FROM changes AS ch
         WHERE u.id = ch.id AND u.api_key = ch.old_ct
        RETURNING ch.key_id, ch.old_fp, ch.new_fp
    ), moved AS (
        UPDATE sentinel_key_health AS h
           SET fingerprint = s.new_fp
          FROM swapped AS s
         WHERE h.key_id = s.key_id AND h.fingerprint = s.old_fp
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM swapped;
    RETURN v_count;
END
$$;

REVOKE ALL ON FUNCTION sentinel_replace_ciphertexts(jsonb) FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION sentinel_replace_ciphertexts(jsonb) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION sentinel_replace_ciphertexts(jsonb) TO service_role;
    END IF;
END
$$;
INSERT INTO sentinel_migrations (name) VALUES ('008_key_rotation.sql') ON CONFLICT DO NOTHING;

-- 010_sentinel_jobs.sql
-- Job state for the health rule and for alerts (sentinel-kit 0.3). `first_tick` is the first
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
INSERT INTO sentinel_migrations (name) VALUES ('010_sentinel_jobs.sql') ON CONFLICT DO NOTHING;

-- 011_user_attempts.sql
-- Fair order (sentinel-kit 0.4). Each run requests users in order of their last attempt
-- (never attempted first, then the oldest attempt, then user_id), so a run that cannot
-- cover every key leaves the rest to the next run, not to never. A run records an attempt
-- for every user it reached, synced or failed (parked keys too), as it writes.
--
-- `user_id` is text: an app's user_keys.user_id may be text, varchar, uuid or bigint, and
-- every comparison goes through its text form.
CREATE TABLE IF NOT EXISTS sentinel_user_attempts (
    user_id       text PRIMARY KEY,
    attempted_at  timestamptz NOT NULL,
    job           text
);
CREATE INDEX IF NOT EXISTS sentinel_user_attempts_attempted_at
    ON sentinel_user_attempts (attempted_at);

-- The shard (0..p_shards-1) of a user, as sentinel_kit.shard_of computes it: the first 8
-- bytes of SHA-256 of the user id's UTF-8 text, as an unsigned big-endian integer, modulo
-- p_shards. The bytes cast to bigint are signed; a negative value s stands for s + 2^64,
-- so its remainder is (s mod n + 2^64 mod n) mod n, all in bigint (2^64 mod n is
-- ((2^63 - 1) mod n + 1) mod n, doubled, mod n).
CREATE OR REPLACE FUNCTION sentinel_shard_of(p_user_id text, p_shards integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
    SELECT (CASE WHEN s.v >= 0 THEN s.v % p_shards
                 ELSE (s.v % p_shards + p_shards
                       + (9223372036854775807 % p_shards + 1) % p_shards * 2 % p_shards)
                      % p_shards
            END)::integer
      FROM (SELECT ('x' || encode(substr(sha256(convert_to(p_user_id, 'UTF8')), 1, 8), 'hex'))
                   ::bit(64)::bigint AS v) AS s
$$;

-- Keys in fair order, for the Data API (SupabaseStore; the SQL stores run the same query
-- from sentinel_kit/stores/_sql.py): keyset paging on (attempt, user_id, id), never-attempted
-- users first, only users not attempted since p_before (the run's start), only the users of
-- shard p_shard of p_shards when given. Ids and user ids are text (compared byte-wise,
-- COLLATE "C"), created_at the JSON text PostgREST would send.
--
-- The order spans two tables, so no index serves it and every call joins and sorts the
-- whole table: one call returns up to p_limit keys (10,000 from SupabaseStore) as ONE JSON
-- array, which Supabase's db-max-rows (1000 rows a response) does not cut, so a pass over
-- 100,000 keys is 10 calls rather than 100. The shard test is sentinel_shard_of's
-- expression written out: a function with a pinned search_path is never inlined, and
-- calling it on every key costs 3-5x the hash itself.
CREATE OR REPLACE FUNCTION sentinel_key_page(
    p_limit integer,
    p_after_attempt timestamptz DEFAULT NULL,
    p_after_user text DEFAULT NULL,
    p_after_id text DEFAULT NULL,
    p_before timestamptz DEFAULT NULL,
    p_shard integer DEFAULT NULL,
    p_shards integer DEFAULT NULL
)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', p.id, 'user_id', p.user_id, 'api_key', p.api_key,
               'created_at', p.created_at, 'attempted_at', p.attempted_at
           ) ORDER BY p.sort_at, p.user_id COLLATE "C", p.id COLLATE "C"), '[]'::jsonb)
      FROM (
        SELECT k.id::text AS id, k.user_id::text AS user_id, k.api_key,
               to_json(k.created_at) #>> '{}' AS created_at, a.attempted_at,
               coalesce(a.attempted_at, '-infinity'::timestamptz) AS sort_at
          FROM user_keys k
          LEFT JOIN sentinel_user_attempts a ON a.user_id = k.user_id::text
         WHERE (p_before IS NULL OR a.attempted_at IS NULL OR a.attempted_at < p_before)
           AND (p_shards IS NULL
                OR (CASE WHEN ('x' || encode(substr(sha256(convert_to(k.user_id::text, 'UTF8')), 1, 8), 'hex'))
                          ::bit(64)::bigint >= 0
                         THEN ('x' || encode(substr(sha256(convert_to(k.user_id::text, 'UTF8')), 1, 8), 'hex'))
                          ::bit(64)::bigint % p_shards
                         ELSE (('x' || encode(substr(sha256(convert_to(k.user_id::text, 'UTF8')), 1, 8), 'hex'))
                          ::bit(64)::bigint % p_shards
                               + p_shards
                               + (9223372036854775807 % p_shards + 1) % p_shards * 2 % p_shards)
                              % p_shards
                    END) = p_shard)
           AND (p_after_user IS NULL
                OR (coalesce(a.attempted_at, '-infinity'::timestamptz),
                    k.user_id::text COLLATE "C", k.id::text COLLATE "C")
                   > (coalesce(p_after_attempt, '-infinity'::timestamptz),
                      p_after_user COLLATE "C", p_after_id COLLATE "C"))
         ORDER BY coalesce(a.attempted_at, '-infinity'::timestamptz),
                  k.user_id::text COLLATE "C", k.id::text COLLATE "C"
         LIMIT p_limit
      ) AS p
$$;

-- Record that these users were attempted at p_at (by job p_job). With a lease (p_lease not
-- null) only while p_fence is still its current token, like sentinel_upsert_user_data:
-- the lease row is locked FOR SHARE and a stale token raises SQLSTATE PT409.
CREATE OR REPLACE FUNCTION sentinel_record_attempts(
    p_user_ids text[], p_at timestamptz, p_job text, p_lease text, p_fence bigint
)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_lease IS NOT NULL THEN
        PERFORM 1 FROM sentinel_leases WHERE name = p_lease AND fence = p_fence FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'sentinel: stale fencing token % for lease %', p_fence, p_lease
                USING ERRCODE = 'PT409';
        END IF;
    END IF;
    INSERT INTO sentinel_user_attempts (user_id, attempted_at, job)
    SELECT DISTINCT u.user_id, p_at, p_job FROM unnest(p_user_ids) AS u(user_id)
    ON CONFLICT (user_id) DO UPDATE
       SET attempted_at = EXCLUDED.attempted_at, job = EXCLUDED.job;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- The backlog: of the users in user_keys (of one shard when given), how many there are,
-- how many were not attempted since p_since (never attempted included), how many were
-- never attempted, and the oldest attempt among them.
CREATE OR REPLACE FUNCTION sentinel_attempt_stats(
    p_since timestamptz, p_shard integer DEFAULT NULL, p_shards integer DEFAULT NULL
)
RETURNS TABLE (users bigint, stale_users bigint, never_attempted bigint,
               oldest_attempt_at timestamptz)
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
    SELECT count(*),
           count(*) FILTER (WHERE a.attempted_at IS NULL OR a.attempted_at < p_since),
           count(*) FILTER (WHERE a.attempted_at IS NULL),
           min(a.attempted_at)
      FROM (SELECT DISTINCT k.user_id::text AS user_id FROM user_keys k) AS u
      LEFT JOIN sentinel_user_attempts a ON a.user_id = u.user_id
     WHERE p_shards IS NULL
        OR (CASE WHEN ('x' || encode(substr(sha256(convert_to(u.user_id, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint >= 0
                 THEN ('x' || encode(substr(sha256(convert_to(u.user_id, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint % p_shards
                 ELSE (('x' || encode(substr(sha256(convert_to(u.user_id, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint % p_shards + p_shards
                       + (9223372036854775807 % p_shards + 1) % p_shards * 2 % p_shards)
                      % p_shards
            END) = p_shard
$$;

-- Only the service role reaches them (see 004_sentinel_security.sql).
ALTER TABLE sentinel_user_attempts ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON TABLE sentinel_user_attempts FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_shard_of(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_key_page(integer, timestamptz, text, text, timestamptz, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_record_attempts(text[], timestamptz, text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_attempt_stats(timestamptz, integer, integer) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON TABLE sentinel_user_attempts FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION '
                           'sentinel_shard_of(text, integer), '
                           'sentinel_key_page(integer, timestamptz, text, text, timestamptz, '
                           'integer, integer), '
                           'sentinel_record_attempts(text[], timestamptz, text, text, bigint), '
                           'sentinel_attempt_stats(timestamptz, integer, integer) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON TABLE sentinel_user_attempts TO service_role;
        GRANT EXECUTE ON FUNCTION
            sentinel_shard_of(text, integer),
            sentinel_key_page(integer, timestamptz, text, text, timestamptz, integer, integer),
            sentinel_record_attempts(text[], timestamptz, text, text, bigint),
            sentinel_attempt_stats(timestamptz, integer, integer) TO service_role;
    END IF;
END
$$;
INSERT INTO sentinel_migrations (name) VALUES ('011_user_attempts.sql') ON CONFLICT DO NOTHING;

-- user_keys and user_data are created locked when this script creates them;
-- existing ones are left as they are. If yours are open to the Data API (row-level
-- security off: `sentinel-kit doctor` says so), print this script with --lock-tables
-- to lock them too.

