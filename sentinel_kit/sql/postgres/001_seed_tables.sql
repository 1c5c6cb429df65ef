-- The original worker's tables, created only when missing. An existing user_keys or
-- user_data (yours, on Supabase) is never altered: not even an index is added to it.
DO $$
BEGIN
    IF to_regclass('user_keys') IS NULL THEN
        CREATE TABLE user_keys (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id     varchar NOT NULL,
            api_key     text NOT NULL,
            created_at  timestamp DEFAULT now()
        );
        -- Keys are read in (user_id, id) order, page by page.
        CREATE INDEX user_keys_user_id_id_idx ON user_keys (user_id, id);
    END IF;
    IF to_regclass('user_data') IS NULL THEN
        CREATE TABLE user_data (
            user_id     varchar PRIMARY KEY,
            name        varchar,
            player_id   integer,
            updated_at  timestamp
        );
    END IF;
END
$$;
