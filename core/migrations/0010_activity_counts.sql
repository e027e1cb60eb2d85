-- How many activity rows each organisation has (issue #18's per-organisation
-- cap, WANDO_ACTIVITY_MAX_PER_ORG), kept in the same statements that insert
-- and delete them (core.activity.INSERT_BATCH, DELETE_OLDER, DELETE_OLDEST).
-- The pruner reads here which organisations are over their cap, and by how
-- much, then deletes that many of their oldest rows: work in proportion to
-- what it deletes. Before, it found each organisation's cap boundary with an
-- OFFSET of the cap, walking up to a million index entries of every
-- organisation every minute.
CREATE TABLE activity_counts (
    org_id   uuid   NOT NULL,
    entries  bigint NOT NULL,
    PRIMARY KEY (org_id)
);

INSERT INTO activity_counts (org_id, entries)
SELECT org_id, count(*) FROM activity GROUP BY org_id;
