-- What WatchActivity follows (issue #18): one row for each organisation's part
-- of each batch the core stores (core.activity.INSERT_BATCH), saying where its
-- entries sit in activity's primary key. Batches take an advisory lock until
-- they commit (core.activity.START_BATCH), so batch_id order is commit
-- order: a watch that has read every batch up to N has missed none before it,
-- however late a gateway's batch arrives after its requests (entries are
-- timestamped at the request). One row per batch rather than an index on
-- activity_id: nothing more to write for each entry.
--
-- Kept an hour (core.activity.BATCHES_KEPT), pruned with the activity.
CREATE TABLE activity_batches (
    org_id       uuid        NOT NULL,
    batch_id     bigint      GENERATED ALWAYS AS IDENTITY,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    first_time   timestamptz NOT NULL,
    last_time    timestamptz NOT NULL,
    first_id     bigint      NOT NULL,
    last_id      bigint      NOT NULL,
    entries      integer     NOT NULL,
    PRIMARY KEY (org_id, batch_id)
);
