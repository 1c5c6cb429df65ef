-- Per-faction syncs (unreleased).
--
-- sentinel_replace_rows: a declared table's rows of one unit (a faction), replaced. The
-- rows are upserted by sentinel_upsert_rows (migration 013: names quoted with format('%I'),
-- values read as the table's own column types, fenced), and in the same transaction the
-- unit's rows whose key is not among them are deleted (members who left the faction). An
-- empty p_rows deletes nothing: an empty answer never empties a faction. Every row must
-- carry p_unit in p_unit_column, which must be one of the key columns. SECURITY INVOKER:
-- it writes only tables the caller (the service role) may write, never the keys or
-- sentinel-kit's own tables. Returns the rows upserted.
CREATE OR REPLACE FUNCTION sentinel_replace_rows(
    p_table text, p_key text[], p_unit_column text, p_unit text, p_rows jsonb,
    p_lease text, p_fence bigint
)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
    v_match text;
BEGIN
    IF p_unit_column IS NULL OR p_unit IS NULL OR NOT (p_unit_column = ANY (p_key)) THEN
        RAISE EXCEPTION 'sentinel: replace needs a unit column among the key columns'
            USING ERRCODE = '22023';
    END IF;
    IF p_rows IS NOT NULL AND EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_rows) AS e
         WHERE (e ->> p_unit_column) IS DISTINCT FROM p_unit
    ) THEN
        RAISE EXCEPTION 'sentinel: a row of % is not of unit %', p_table, p_unit
            USING ERRCODE = '22023';
    END IF;
    -- Checks the table and the fence, and returns 0 for no rows.
    v_count := sentinel_upsert_rows(p_table, p_key, p_rows, p_lease, p_fence);
    IF p_rows IS NULL OR jsonb_array_length(p_rows) = 0 THEN
        RETURN 0;
    END IF;
    SELECT string_agg(format('r.%I IS NOT DISTINCT FROM t.%I', c, c), ' AND ') INTO v_match
      FROM unnest(p_key) AS c;
    EXECUTE format(
        'DELETE FROM %I AS t WHERE t.%I::text = $1 AND NOT EXISTS ('
        'SELECT 1 FROM jsonb_populate_recordset(NULL::%I, $2) AS r WHERE %s)',
        p_table, p_unit_column, p_table, v_match
    ) USING p_unit, p_rows;
    RETURN v_count;
END
$$;

-- One sync's attempts (units, or a per-faction sync's key uses under '<sync>:keys') as one
-- JSON array (db-max-rows does not cut it), for the Data API.
CREATE OR REPLACE FUNCTION sentinel_unit_attempts_of(p_sync text)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'unit_id', a.unit_id, 'attempted_at', a.attempted_at) ORDER BY a.unit_id),
           '[]'::jsonb)
      FROM sentinel_unit_attempts a
     WHERE a.sync = p_sync
$$;

REVOKE ALL ON FUNCTION sentinel_replace_rows(text, text[], text, text, jsonb, text, bigint)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_unit_attempts_of(text) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION '
                           'sentinel_replace_rows(text, text[], text, text, jsonb, text, '
                           'bigint), sentinel_unit_attempts_of(text) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION
            sentinel_replace_rows(text, text[], text, text, jsonb, text, bigint),
            sentinel_unit_attempts_of(text)
            TO service_role;
    END IF;
END
$$;
