-- Secret rotation (`sentinel-kit keys rotate`): replace ciphertexts re-encrypted under the
-- new ENCRYPTION_KEY, in one transaction per batch.
--
-- p_changes is a JSON array of {key_id, old, new, old_fp, new_fp}. A key is replaced only
-- while it still holds `old` (compare-and-swap): a key the app re-saved in between keeps the
-- app's value. A parked key (sentinel_key_health, keyed by a fingerprint of the
-- ciphertext) moves to the new fingerprint in the same transaction, or the rotation would
-- un-park every dead key and the next sync would call Torn with them again. `key_id` is
-- cast to the type of user_keys.id (uuid, text or bigint) through the table's own row type,
-- so the primary key's index is used. Returns how many keys were replaced.
CREATE OR REPLACE FUNCTION sentinel_replace_ciphertexts(p_changes jsonb)
RETURNS integer
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH changes AS (
        SELECT k.id, c->>'key_id' AS key_id, c->>'old' AS old_ct, c->>'new' AS new_ct,
               c->>'old_fp' AS old_fp, c->>'new_fp' AS new_fp
          FROM jsonb_array_elements(p_changes) AS c
         CROSS JOIN LATERAL jsonb_populate_record(
               NULL::user_keys, jsonb_build_object('id', c->'key_id')) AS k
    ), swapped AS (
        UPDATE user_keys AS u
           SET api_key = ch.new_ct
          FROM changes AS ch
         WHERE u.id = ch.id AND u.api_key = ch.old_ct
        RETURNING ch.key_id, ch.old_fp, ch.new_fp
    ), moved AS (
        UPDATE sentinel_key_health AS h
           SET fingerprint = s.new_fp
          FROM swapped AS s
         WHERE h.key_id = s.key_id AND h.fingerprint = s.old_fp
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM swapped;
    RETURN v_count;
END
$$;

REVOKE ALL ON FUNCTION sentinel_replace_ciphertexts(jsonb) FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION sentinel_replace_ciphertexts(jsonb) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION sentinel_replace_ciphertexts(jsonb) TO service_role;
    END IF;
END
$$;
