-- Syncs as declarations (unreleased). Any sync writes its rows into its own table
-- through one generic fenced upsert, for the Data API (SupabaseStore) and PostgresStore
-- alike. The table, key and column names are identifiers: sentinel-kit validates them
-- before calling, and this function quotes each with format('%I'), so no name is ever read
-- as SQL. It is SECURITY INVOKER: it writes only tables the caller (the service role) may
-- write, and never the keys or sentinel-kit's own tables.
--
-- p_rows is a JSON array of objects with the same keys (the columns); values are read as
-- the table's own column types (jsonb_populate_recordset). With a lease (p_lease not null)
-- the rows are written only while p_fence is still its token, like
-- sentinel_upsert_user_data: the lease row is locked FOR SHARE and a stale token raises
-- SQLSTATE PT409. Returns the rows written.
CREATE OR REPLACE FUNCTION sentinel_upsert_rows(
    p_table text, p_key text[], p_rows jsonb, p_lease text, p_fence bigint
)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_columns text[];
    v_count integer;
    v_updates text;
BEGIN
    IF p_table IS NULL OR p_table = 'user_keys' OR p_table LIKE 'sentinel\_%' THEN
        RAISE EXCEPTION 'sentinel: % is not a table a sync may write', p_table
            USING ERRCODE = '42501';
    END IF;
    IF p_lease IS NOT NULL THEN
        PERFORM 1 FROM sentinel_leases WHERE name = p_lease AND fence = p_fence FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'sentinel: stale fencing token % for lease %', p_fence, p_lease
                USING ERRCODE = 'PT409';
        END IF;
    END IF;
    IF p_rows IS NULL OR jsonb_array_length(p_rows) = 0 THEN
        RETURN 0;
    END IF;
    SELECT array_agg(k ORDER BY k) INTO v_columns FROM jsonb_object_keys(p_rows -> 0) AS k;
    SELECT string_agg(format('%I = EXCLUDED.%I', c, c), ', ') INTO v_updates
      FROM unnest(v_columns) AS c
     WHERE c <> ALL (p_key);
    EXECUTE format(
        'INSERT INTO %I (%s) SELECT %s FROM jsonb_populate_recordset(NULL::%I, $1) '
        'ON CONFLICT (%s) DO %s',
        p_table,
        (SELECT string_agg(format('%I', c), ', ') FROM unnest(v_columns) AS c),
        (SELECT string_agg(format('%I', c), ', ') FROM unnest(v_columns) AS c),
        p_table,
        (SELECT string_agg(format('%I', c), ', ') FROM unnest(p_key) AS c),
        CASE WHEN v_updates IS NULL THEN 'NOTHING' ELSE 'UPDATE SET ' || v_updates END
    ) USING p_rows;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Fair order per sync: when each unit (a user) was last attempted BY EACH SYNC, so one
-- sync's attempts never reorder another's. sync-users keeps sentinel_user_attempts (which
-- replicas of 0.2 read and write); every other sync keeps its attempts here.
CREATE TABLE IF NOT EXISTS sentinel_unit_attempts (
    sync          text NOT NULL,
    unit_id       text NOT NULL,
    attempted_at  timestamptz NOT NULL,
    PRIMARY KEY (sync, unit_id)
);
CREATE INDEX IF NOT EXISTS sentinel_unit_attempts_attempted_at
    ON sentinel_unit_attempts (sync, attempted_at);

-- Keys in fair order for one sync, for the Data API (SupabaseStore; the SQL stores run the
-- same query from sentinel_kit/stores/_sql.py): sentinel_key_page with the attempts of
-- p_sync (see 011_user_attempts.sql for the shard expression written out).
CREATE OR REPLACE FUNCTION sentinel_unit_key_page(
    p_sync text,
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
          LEFT JOIN sentinel_unit_attempts a ON a.sync = p_sync AND a.unit_id = k.user_id::text
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


-- Record that these units were attempted by p_sync at p_at; fenced like
-- sentinel_record_attempts (a stale token raises SQLSTATE PT409).
CREATE OR REPLACE FUNCTION sentinel_record_unit_attempts(
    p_sync text, p_unit_ids text[], p_at timestamptz, p_lease text, p_fence bigint
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
    INSERT INTO sentinel_unit_attempts (sync, unit_id, attempted_at)
    SELECT DISTINCT p_sync, u.unit_id, p_at FROM unnest(p_unit_ids) AS u(unit_id)
    ON CONFLICT (sync, unit_id) DO UPDATE SET attempted_at = EXCLUDED.attempted_at;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Key access by sync: a key whose access level is too low for one sync's endpoint (Torn
-- code 16) is marked for that sync only; other syncs keep using it, and that sync asks it
-- again once the key is re-saved (`fingerprint` hashes the ciphertext). No key material.
CREATE TABLE IF NOT EXISTS sentinel_key_access (
    key_id       text NOT NULL,
    sync         text NOT NULL,
    fingerprint  text NOT NULL,
    code         integer NOT NULL,
    since        timestamptz NOT NULL,
    PRIMARY KEY (key_id, sync)
);

-- The marks of one sync as one JSON array (db-max-rows does not cut it), for the Data API.
CREATE OR REPLACE FUNCTION sentinel_key_access_of(p_sync text)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'key_id', a.key_id, 'fingerprint', a.fingerprint, 'code', a.code,
               'since', a.since) ORDER BY a.key_id), '[]'::jsonb)
      FROM sentinel_key_access a
     WHERE a.sync = p_sync
$$;

-- Mark keys for one sync (a JSON array of {key_id, fingerprint, code, since}).
CREATE OR REPLACE FUNCTION sentinel_save_key_access(p_sync text, p_rows jsonb)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    INSERT INTO sentinel_key_access (key_id, sync, fingerprint, code, since)
    SELECT r.key_id, p_sync, r.fingerprint, r.code, r.since
      FROM jsonb_to_recordset(coalesce(p_rows, '[]')) AS r(
           key_id text, fingerprint text, code integer, since timestamptz)
    ON CONFLICT (key_id, sync) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, code = EXCLUDED.code, since = EXCLUDED.since;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Only the service role reaches them (see 004_sentinel_security.sql).
ALTER TABLE sentinel_unit_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE sentinel_key_access ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON TABLE sentinel_unit_attempts, sentinel_key_access FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_key_access_of(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_save_key_access(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_upsert_rows(text, text[], jsonb, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_unit_key_page(text, integer, timestamptz, text, text, timestamptz, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_record_unit_attempts(text, text[], timestamptz, text, bigint) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON TABLE sentinel_unit_attempts, sentinel_key_access '
                           'FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION sentinel_key_access_of(text), '
                           'sentinel_save_key_access(text, jsonb) FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION '
                           '%s, %s, %s FROM %I',
                           'sentinel_upsert_rows(text, text[], jsonb, text, bigint)',
                           'sentinel_unit_key_page(text, integer, timestamptz, text, text, '
                           'timestamptz, integer, integer)',
                           'sentinel_record_unit_attempts(text, text[], timestamptz, text, bigint)',
                           r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON TABLE sentinel_unit_attempts, sentinel_key_access TO service_role;
        GRANT EXECUTE ON FUNCTION
            sentinel_key_access_of(text), sentinel_save_key_access(text, jsonb) TO service_role;
        GRANT EXECUTE ON FUNCTION
            sentinel_upsert_rows(text, text[], jsonb, text, bigint),
            sentinel_unit_key_page(text, integer, timestamptz, text, text, timestamptz,
                                   integer, integer),
            sentinel_record_unit_attempts(text, text[], timestamptz, text, bigint)
            TO service_role;
    END IF;
END
$$;
