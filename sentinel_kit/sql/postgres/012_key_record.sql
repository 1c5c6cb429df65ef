-- An incident is not mass death (unreleased). Torn has answered code 2 ("Incorrect
-- key") for valid keys during incidents, so the sync keeps which keys worked: each key's last
-- success, and its strikes (runs with no success anywhere in which Torn answered code 2 for
-- it, an hour apart or more; the third parks it). `fingerprint` hashes the ciphertext the
-- facts are about, so a re-saved key starts fresh. No key material.
CREATE TABLE IF NOT EXISTS sentinel_key_record (
    key_id           text PRIMARY KEY,
    user_id          text NOT NULL,
    fingerprint      text NOT NULL,
    succeeded_at     timestamptz,
    strikes          integer NOT NULL DEFAULT 0,
    first_strike_at  timestamptz,
    last_strike_at   timestamptz
);

-- The run that parked each key (sentinel_key_health), so `keys health --reset --run RUN_ID`
-- un-parks what one run parked. Written with the park, deleted with it.
CREATE TABLE IF NOT EXISTS sentinel_key_parks (
    key_id       text PRIMARY KEY,
    fingerprint  text NOT NULL,
    run_id       text NOT NULL,
    parked_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sentinel_key_parks_run_id ON sentinel_key_parks (run_id);

-- Key health in one transaction, for the Data API (SupabaseStore; the SQL stores run the
-- same statements in one transaction of their own): delete the rows of p_clear, upsert the
-- parks of p_park (a JSON array of sentinel_key_health rows, each with the `run_id` that
-- parked it, or null), and keep sentinel_key_parks in step.
CREATE OR REPLACE FUNCTION sentinel_save_key_health(p_park jsonb, p_clear text[])
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
BEGIN
    DELETE FROM sentinel_key_health WHERE key_id = ANY (coalesce(p_clear, '{}'));
    DELETE FROM sentinel_key_parks WHERE key_id = ANY (coalesce(p_clear, '{}'));
    INSERT INTO sentinel_key_health
           (key_id, user_id, fingerprint, state, last_code, reason, since, retry_after)
    SELECT r.key_id, r.user_id, r.fingerprint, r.state, r.last_code, r.reason, r.since,
           r.retry_after
      FROM jsonb_to_recordset(coalesce(p_park, '[]')) AS r(
           key_id text, user_id text, fingerprint text, state text, last_code integer,
           reason text, since timestamptz, retry_after timestamptz)
    ON CONFLICT (key_id) DO UPDATE
       SET user_id = EXCLUDED.user_id, fingerprint = EXCLUDED.fingerprint,
           state = EXCLUDED.state, last_code = EXCLUDED.last_code, reason = EXCLUDED.reason,
           since = EXCLUDED.since, retry_after = EXCLUDED.retry_after;
    DELETE FROM sentinel_key_parks AS p
     USING jsonb_to_recordset(coalesce(p_park, '[]')) AS r(key_id text, run_id text)
     WHERE p.key_id = r.key_id AND r.run_id IS NULL;
    INSERT INTO sentinel_key_parks (key_id, fingerprint, run_id, parked_at)
    SELECT r.key_id, r.fingerprint, r.run_id, r.since
      FROM jsonb_to_recordset(coalesce(p_park, '[]')) AS r(
           key_id text, fingerprint text, run_id text, since timestamptz)
     WHERE r.run_id IS NOT NULL
    ON CONFLICT (key_id) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, run_id = EXCLUDED.run_id,
           parked_at = EXCLUDED.parked_at;
END
$$;

-- Un-park keys in one command (`keys health --reset --run RUN_ID`, or `--code N --since T`):
-- the keys parked by run p_run (under the ciphertext it parked), with Torn code p_code,
-- parked at or after p_since; every condition given must hold, and one must be given. Their
-- strikes are forgotten too. Returns how many keys were un-parked.
CREATE OR REPLACE FUNCTION sentinel_unpark_keys(
    p_run text DEFAULT NULL, p_code integer DEFAULT NULL, p_since timestamptz DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_run IS NULL AND p_code IS NULL AND p_since IS NULL THEN
        RAISE EXCEPTION 'sentinel: say which keys to un-park (a run, a code or a time)'
            USING ERRCODE = 'PT400';
    END IF;
    WITH gone AS (
        DELETE FROM sentinel_key_health AS h
         WHERE (p_run IS NULL OR EXISTS (
                    SELECT 1 FROM sentinel_key_parks AS p
                     WHERE p.key_id = h.key_id AND p.run_id = p_run
                       AND p.fingerprint = h.fingerprint))
           AND (p_code IS NULL OR h.last_code = p_code)
           AND (p_since IS NULL OR h.since >= p_since)
        RETURNING h.key_id
    ), parks AS (
        DELETE FROM sentinel_key_parks AS p USING gone AS g WHERE p.key_id = g.key_id
        RETURNING 1
    ), strikes AS (
        UPDATE sentinel_key_record AS k
           SET strikes = 0, first_strike_at = NULL, last_strike_at = NULL
          FROM gone AS g
         WHERE k.key_id = g.key_id
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM gone;
    RETURN v_count;
END
$$;

-- Only the service role reaches them (see 004_sentinel_security.sql).
ALTER TABLE sentinel_key_record ENABLE ROW LEVEL SECURITY;
ALTER TABLE sentinel_key_parks ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON TABLE sentinel_key_record, sentinel_key_parks FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_save_key_health(jsonb, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION sentinel_unpark_keys(text, integer, timestamptz) FROM PUBLIC;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON TABLE sentinel_key_record, sentinel_key_parks FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION '
                           'sentinel_save_key_health(jsonb, text[]), '
                           'sentinel_unpark_keys(text, integer, timestamptz) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON TABLE sentinel_key_record, sentinel_key_parks TO service_role;
        GRANT EXECUTE ON FUNCTION
            sentinel_save_key_health(jsonb, text[]),
            sentinel_unpark_keys(text, integer, timestamptz) TO service_role;
    END IF;
END
$$;
