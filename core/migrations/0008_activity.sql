-- Activity (issue #18): one row per SCIM request an organisation's token made,
-- for Wando's support staff. Written in batches by the core from what the
-- gateway sends (core.activity.INSERT_BATCH); pruned by age
-- (WANDO_ACTIVITY_RETENTION_DAYS) and per-organisation count
-- (WANDO_ACTIVITY_MAX_PER_ORG) in small batches.
--
-- Never a body, a header other than User-Agent, or a password. token_id is
-- not a foreign key: rows are attributed through scim_tokens at write time,
-- and a key check would cost every insert.
CREATE TABLE activity (
    org_id        uuid        NOT NULL,
    request_time  timestamptz NOT NULL,
    activity_id   bigint      GENERATED ALWAYS AS IDENTITY,
    token_id      uuid        NOT NULL,
    request_id    text        NOT NULL,
    client        text        NOT NULL,
    user_agent    text        NOT NULL,
    method        text        NOT NULL,
    route         text        NOT NULL,
    resource_id   text        NOT NULL,
    filter        text        NOT NULL,
    status        smallint    NOT NULL,
    scim_type     text        NOT NULL,
    detail        text        NOT NULL,
    latency_us    integer     NOT NULL,
    -- reads are newest first within an organisation and a time range; so is
    -- the pruning by age
    PRIMARY KEY (org_id, request_time, activity_id)
);
-- `--errors`: only the failed requests, from their own (small) index
CREATE INDEX activity_errors_idx ON activity (org_id, request_time, activity_id)
    WHERE status >= 400;
