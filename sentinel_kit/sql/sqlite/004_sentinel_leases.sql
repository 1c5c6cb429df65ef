-- Leases with fencing tokens: `fence` only ever grows, so a token identifies one tenure.
-- `expires_at` is seconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS sentinel_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT,
    fence       INTEGER NOT NULL DEFAULT 0,
    expires_at  REAL
);
