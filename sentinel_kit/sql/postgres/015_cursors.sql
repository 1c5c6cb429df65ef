-- Incremental syncs (unreleased): how far each unit of a sync has read a Torn log. A sync
-- declared with cursor= asks each unit from here (Torn's `from`, inclusive); the cursor is
-- the greatest entry time (a Unix timestamp) written, and moves in the same transaction as
-- the rows it covers, so a crash or a time box neither skips nor repeats an entry.
CREATE TABLE IF NOT EXISTS sentinel_cursors (
    sync        text NOT NULL,
    unit_id     text NOT NULL,
    cursor      bigint NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (sync, unit_id)
);

-- One page of an incremental sync: its rows (through sentinel_upsert_rows of migration
-- 013: names quoted, values read as the table's column types, fenced) and the unit's new
-- cursor, in one transaction; a cursor never moves back. Returns the rows written.
CREATE OR REPLACE FUNCTION sentinel_upsert_cursor_rows(
    p_table text, p_key text[], p_rows jsonb, p_sync text, p_unit_id text, p_cursor bigint,
    p_lease text, p_fence bigint
)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    v_count := sentinel_upsert_rows(p_table, p_key, p_rows, p_lease, p_fence);
    INSERT INTO sentinel_cursors AS c (sync, unit_id, cursor, updated_at)
    VALUES (p_sync, p_unit_id, p_cursor, now())
    ON CONFLICT (sync, unit_id) DO UPDATE
       SET cursor = greatest(c.cursor, EXCLUDED.cursor), updated_at = EXCLUDED.updated_at;
    RETURN v_count;
END
$$;

-- The cursors of one sync as one JSON object {unit_id: cursor} (db-max-rows does not cut
-- it), for the Data API.
CREATE OR REPLACE FUNCTION sentinel_cursors_of(p_sync text)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(c.unit_id, c.cursor), '{}'::jsonb)
      FROM sentinel_cursors c
     WHERE c.sync = p_sync
$$;

-- Delete at most p_limit rows of a log table whose cursor column is older than p_before
-- (a Unix timestamp): Table(keep=). Names quoted with format('%I'); never the keys or
-- sentinel-kit's own tables; fenced like sentinel_upsert_rows. Returns the rows deleted.
CREATE OR REPLACE FUNCTION sentinel_prune_rows(
    p_table text, p_column text, p_before bigint, p_limit integer, p_lease text, p_fence bigint
)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_table IS NULL OR p_table = 'user_keys' OR p_table = 'user_data'
       OR p_table LIKE 'sentinel\_%' THEN
        RAISE EXCEPTION 'sentinel: % is not a table a sync may prune', p_table
            USING ERRCODE = '42501';
    END IF;
    IF p_lease IS NOT NULL THEN
        PERFORM 1 FROM sentinel_leases WHERE name = p_lease AND fence = p_fence FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'sentinel: stale fencing token % for lease %', p_fence, p_lease
                USING ERRCODE = 'PT409';
        END IF;
    END IF;
    EXECUTE format(
        'DELETE FROM %I WHERE ctid = ANY (ARRAY(SELECT ctid FROM %I WHERE %I < $1 LIMIT $2))',
        p_table, p_table, p_column
    ) USING p_before, p_limit;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Only the service role reaches them (see 004_sentinel_security.sql).
ALTER TABLE sentinel_cursors ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON TABLE sentinel_cursors FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_upsert_cursor_rows(text, text[], jsonb, text, text, bigint, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_cursors_of(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_prune_rows(text, text, bigint, integer, text, bigint) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON TABLE sentinel_cursors FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION %s, %s, %s FROM %I',
                           'sentinel_upsert_cursor_rows(text, text[], jsonb, text, text, '
                           'bigint, text, bigint)',
                           'sentinel_cursors_of(text)',
                           'sentinel_prune_rows(text, text, bigint, integer, text, bigint)',
                           r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON TABLE sentinel_cursors TO service_role;
        GRANT EXECUTE ON FUNCTION
            sentinel_upsert_cursor_rows(text, text[], jsonb, text, text, bigint, text, bigint),
            sentinel_cursors_of(text),
            sentinel_prune_rows(text, text, bigint, integer, text, bigint)
            TO service_role;
    END IF;
END
$$;
