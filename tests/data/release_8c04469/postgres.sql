-- `sentinel-kit migrate --print` (postgres) of the last release, commit 8c04469, verbatim below:
-- its sentinel_kit/sql/ files rendered by that release's render_script. Used by
-- tests/stores/test_upgrade.py to set up a database as that release left it.
-- sentinel-kit migrations (postgres); safe to run more than once.
CREATE TABLE IF NOT EXISTS sentinel_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());

-- 001_seed_tables.sql
-- The original worker's tables, created only when missing. An existing user_keys or
-- user_data (yours, on Supabase) is never altered: not even an index is added to it.
DO $$
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
    END IF;
    IF to_regclass('user_data') IS NULL THEN
        CREATE TABLE user_data (
            user_id     varchar PRIMARY KEY,
            name        varchar,
            player_id   integer,
            updated_at  timestamp
        );
    END IF;
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
