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
