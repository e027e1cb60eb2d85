-- Per-organisation counter of effective-role changes. It lives in its own
-- table, keyed by org_id, rather than in organizations (a reference table
-- under Citus, where frequent updates are costly). Taking this row's lock
-- serialises role-affecting writes within one organisation, which makes
-- role_changes.seq gapless and in commit order.
CREATE TABLE role_counters (
    org_id    uuid   NOT NULL REFERENCES organizations (org_id),
    last_seq  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id)
);

INSERT INTO role_counters (org_id, last_seq)
SELECT org_id, role_seq FROM organizations;

ALTER TABLE organizations DROP COLUMN role_seq;

-- role lookups by user: the groups granting a role
CREATE INDEX group_roles_role_idx ON group_roles (org_id, role, group_id);
