-- Sentinel's own tables. Timestamps are timestamptz (UTC on the wire).

-- Run history: one row per run; (job, scheduled_for) is unique so two replicas can never
-- both run the same scheduled tick.
CREATE TABLE IF NOT EXISTS sentinel_runs (
    run_id         uuid PRIMARY KEY,
    job            text NOT NULL,
    scheduled_for  timestamptz,
    holder         text,
    fence          bigint,
    status         text NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    keys_total     integer NOT NULL DEFAULT 0,
    synced         integer NOT NULL DEFAULT 0,
    failed         integer NOT NULL DEFAULT 0,
    skipped        integer NOT NULL DEFAULT 0,
    written        integer NOT NULL DEFAULT 0,
    error          text,
    UNIQUE (job, scheduled_for)
);
CREATE INDEX IF NOT EXISTS sentinel_runs_job_started_idx ON sentinel_runs (job, started_at);

-- Key health: parked keys. No key material: `fingerprint` hashes the stored ciphertext,
-- so re-saving a key (a new ciphertext) un-parks it.
CREATE TABLE IF NOT EXISTS sentinel_key_health (
    key_id       text PRIMARY KEY,
    user_id      text NOT NULL,
    fingerprint  text NOT NULL,
    state        text NOT NULL CHECK (state IN ('dead', 'suspended', 'cooldown')),
    last_code    integer,
    reason       text,
    since        timestamptz NOT NULL,
    retry_after  timestamptz
);

-- Leases with fencing tokens: `fence` only ever grows, so a token identifies one tenure.
CREATE TABLE IF NOT EXISTS sentinel_leases (
    name        text PRIMARY KEY,
    holder      text,
    fence       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz
);
