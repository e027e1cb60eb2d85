-- Each organisation's SCIM rate limit, shared by every gateway and core of
-- the fleet (core.ratelimit): GCRA keeps one number per organisation, the
-- theoretical arrival time `tat` (seconds since the epoch, by the database's
-- clock) of the next request that conforms to the rate. One upsert per
-- request reads and moves it atomically; `admitted` is that request's answer.
--
-- UNLOGGED: written on every request, and worth nothing after a crash (the
-- table comes back empty, and every organisation's burst with it); it skips
-- the WAL and so the disk flush a logged write would wait for.
CREATE UNLOGGED TABLE rate_limits (
    org_id    uuid             PRIMARY KEY REFERENCES organizations (org_id) ON DELETE CASCADE,
    tat       double precision NOT NULL,
    admitted  boolean          NOT NULL
);
