-- What each key can do (unreleased), as Torn's /key/info answered it: the access level
-- (1 public, 2 minimal, 3 limited, 4 full; 0 unknown) and its type, the owner's player id
-- and faction, and whether the owner has faction API access. `fingerprint` hashes the
-- ciphertext that was checked, so a re-saved key is unknown again. No key material.
CREATE TABLE IF NOT EXISTS sentinel_key_info (
    key_id          text PRIMARY KEY,
    fingerprint     text NOT NULL,
    access_level    integer NOT NULL DEFAULT 0,
    access_type     text NOT NULL DEFAULT '',
    player_id       bigint,
    faction_id      bigint,
    faction_access  boolean NOT NULL DEFAULT false,
    checked_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sentinel_key_info_faction ON sentinel_key_info (faction_id);

-- Save key info (a JSON array of sentinel_key_info rows), upserted on key_id; fenced like
-- sentinel_upsert_rows: with a lease (p_lease not null) the rows are written only while
-- p_fence is still its token (a stale token raises SQLSTATE PT409). For the Data API
-- (SupabaseStore) and PostgresStore alike. Returns the rows written.
CREATE OR REPLACE FUNCTION sentinel_save_key_info(p_rows jsonb, p_lease text, p_fence bigint)
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
    INSERT INTO sentinel_key_info (key_id, fingerprint, access_level, access_type, player_id,
                                   faction_id, faction_access, checked_at)
    SELECT r.key_id, r.fingerprint, coalesce(r.access_level, 0), coalesce(r.access_type, ''),
           r.player_id, r.faction_id, coalesce(r.faction_access, false), r.checked_at
      FROM jsonb_to_recordset(coalesce(p_rows, '[]')) AS r(
           key_id text, fingerprint text, access_level integer, access_type text,
           player_id bigint, faction_id bigint, faction_access boolean, checked_at timestamptz)
    ON CONFLICT (key_id) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, access_level = EXCLUDED.access_level,
           access_type = EXCLUDED.access_type, player_id = EXCLUDED.player_id,
           faction_id = EXCLUDED.faction_id, faction_access = EXCLUDED.faction_access,
           checked_at = EXCLUDED.checked_at;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Only the service role reaches them (see 004_sentinel_security.sql).
ALTER TABLE sentinel_key_info ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON TABLE sentinel_key_info FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_save_key_info(jsonb, text, bigint) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON TABLE sentinel_key_info FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION sentinel_save_key_info(jsonb, text, bigint) '
                           'FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON TABLE sentinel_key_info TO service_role;
        GRANT EXECUTE ON FUNCTION sentinel_save_key_info(jsonb, text, bigint) TO service_role;
    END IF;
END
$$;
