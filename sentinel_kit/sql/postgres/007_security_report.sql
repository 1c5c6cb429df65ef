-- What doctor and migrate need to know about who can reach sentinel's objects, as one JSON
-- document, so that Supabase's Data API (an RPC as the service role) sees the same as a
-- direct connection. It reads the catalog only; the rules (open tables, Supabase's linter
-- checks, supported column types) are applied by sentinel-kit itself.
--
--   api_roles  Supabase's API roles that exist here (`anon`, `authenticated`).
--   tables     user_keys, user_data and every sentinel_ table: row-level security, its
--              policies, whether it applies to the caller (row_security_active: not for
--              the owner or a role with BYPASSRLS), the table privileges each API role
--              holds (directly, through PUBLIC or through a role it is a member of), and
--              the columns with their types.
--   functions  every sentinel_ function: SECURITY DEFINER or not, its pinned search_path
--              (null when it has none), and the API roles that may execute it.
CREATE OR REPLACE FUNCTION sentinel_security_report()
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
WITH api_roles AS (
    SELECT r.oid, r.rolname::text AS name
      FROM pg_catalog.pg_roles r
     WHERE r.rolname IN ('anon', 'authenticated')
), tables AS (
    SELECT c.oid, c.relname::text AS name, c.relrowsecurity AS rls
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'public'::regnamespace
       AND c.relkind IN ('r', 'p')
       AND (c.relname IN ('user_keys', 'user_data') OR c.relname LIKE 'sentinel\_%')
), functions AS (
    SELECT p.oid, p.proname::text AS name, p.prosecdef,
           pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
           (SELECT substr(cfg, length('search_path=') + 1)
              FROM unnest(p.proconfig) AS cfg
             WHERE cfg LIKE 'search\_path=%'
             LIMIT 1) AS search_path
      FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = 'public'::regnamespace
       AND p.proname LIKE 'sentinel\_%'
)
SELECT jsonb_build_object(
    'schema', 'public',
    'api_roles', (SELECT coalesce(jsonb_agg(r.name ORDER BY r.name), '[]'::jsonb) FROM api_roles r),
    'tables', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'name', t.name,
                   'rls', t.rls,
                   'policies', (SELECT count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = t.oid),
                   'rls_applies_to_caller', pg_catalog.row_security_active(t.oid),
                   'grants', (
                       SELECT coalesce(jsonb_object_agg(r.name, (
                                  SELECT coalesce(jsonb_agg(v.privilege ORDER BY v.privilege), '[]'::jsonb)
                                    FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                                                      'TRUNCATE', 'REFERENCES', 'TRIGGER'])
                                         AS v(privilege)
                                   WHERE pg_catalog.has_table_privilege(r.oid, t.oid, v.privilege)
                              )), '{}'::jsonb)
                         FROM api_roles r),
                   'columns', (
                       SELECT coalesce(jsonb_agg(jsonb_build_object(
                                  'name', a.attname::text,
                                  'type', pg_catalog.format_type(a.atttypid, a.atttypmod)
                              ) ORDER BY a.attnum), '[]'::jsonb)
                         FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped)
               ) ORDER BY t.name), '[]'::jsonb)
          FROM tables t),
    'functions', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'name', f.name,
                   'args', f.args,
                   'security_definer', f.prosecdef,
                   'search_path', f.search_path,
                   'executable_by', (
                       SELECT coalesce(jsonb_agg(r.name ORDER BY r.name), '[]'::jsonb)
                         FROM api_roles r
                        WHERE pg_catalog.has_function_privilege(r.oid, f.oid, 'EXECUTE'))
               ) ORDER BY f.name, f.args), '[]'::jsonb)
          FROM functions f)
);
$$;

REVOKE ALL ON FUNCTION sentinel_security_report() FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION sentinel_security_report() FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION sentinel_security_report() TO service_role;
    END IF;
END
$$;
