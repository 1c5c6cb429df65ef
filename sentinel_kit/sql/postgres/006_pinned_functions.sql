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
