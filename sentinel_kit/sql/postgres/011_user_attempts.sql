-- Fair order (sentinel-kit 0.2). Each run requests users in order of their last attempt
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
