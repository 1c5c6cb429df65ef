-- Supabase's API roles and default privileges on plain PostgreSQL 15, for the PostgREST
-- stand-in (tests/fakepostgrest.py). Copied from /work/notes/supabase_roles.sql (researched from
-- supabase/postgres, see the sources below); the only change: CREATE ROLE tolerates a role
-- created at the same moment by another test session that does not take the advisory lock.
--
-- Emulate Supabase's API roles + default privileges on plain PostgreSQL 15.
-- Run as a superuser (e.g. postgres), once per database; safe to re-run.
-- Roles are CLUSTER-wide (shared by every database of the server);
-- grants / default privileges are per database.
-- Source: supabase/postgres migrations/db/init-scripts/00000000000000-initial-schema.sql
--         + migrations 20221028101028, 20221103090837, 20230201083204,
--           20230529180330, 20231130133139 (see splinter.md, Part B).

-- Serialise concurrent runs (e.g. pytest-xdist workers): role DDL is cluster-wide.
SELECT pg_advisory_lock(hashtext('emulate_supabase_roles'));

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
    BEGIN CREATE ROLE anon NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
    BEGIN CREATE ROLE authenticated NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
    BEGIN CREATE ROLE service_role NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
    BEGIN CREATE ROLE authenticator LOGIN NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  END IF;
END $$;

-- Attributes as on a current Supabase project (init: NOINHERIT; 2023-05 migration: INHERIT).
ALTER ROLE anon          NOLOGIN INHERIT NOBYPASSRLS;
ALTER ROLE authenticated NOLOGIN INHERIT NOBYPASSRLS;
ALTER ROLE service_role  NOLOGIN INHERIT BYPASSRLS;
ALTER ROLE authenticator LOGIN NOINHERIT;

-- PostgREST logs in as authenticator and does SET ROLE anon|authenticated|service_role.
GRANT anon, authenticated, service_role TO authenticator;
-- Supabase also lets postgres SET ROLE to the API roles (no-op for a superuser).
GRANT anon, authenticated, service_role TO postgres;

-- Per-role settings (take effect at LOGIN as that role, or via PostgREST's
-- "impersonated role settings"; NOT applied by a plain SET ROLE).
ALTER ROLE anon          SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';
ALTER ROLE authenticator SET statement_timeout = '8s';
ALTER ROLE authenticator SET lock_timeout = '8s';

-- Schema access.
GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;
CREATE SCHEMA IF NOT EXISTS extensions;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;

-- Default privileges for objects that postgres creates in public
-- (Supabase: init-scripts run as postgres, so the unqualified ALTER DEFAULT
-- PRIVILEGES there has grantor/creator = postgres).
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON TABLES    TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
  GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;

-- Supabase has the same three for objects created by supabase_admin; only
-- applied here if such a role already exists (not created by this script).
DO $$
DECLARE k text;
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'supabase_admin') THEN
    FOREACH k IN ARRAY ARRAY['TABLES', 'FUNCTIONS', 'SEQUENCES'] LOOP
      EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public '
                     'GRANT ALL ON %s TO postgres, anon, authenticated, service_role', k);
    END LOOP;
  END IF;
END $$;

SELECT pg_advisory_unlock(hashtext('emulate_supabase_roles'));
