-- Syncs as declarations (sentinel-kit 0.6). Any sync writes its rows into its own table
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

-- Only the service role reaches it (see 004_sentinel_security.sql).
REVOKE ALL ON FUNCTION sentinel_upsert_rows(text, text[], jsonb, text, bigint) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION '
                           'sentinel_upsert_rows(text, text[], jsonb, text, bigint) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION
            sentinel_upsert_rows(text, text[], jsonb, text, bigint) TO service_role;
    END IF;
END
$$;
