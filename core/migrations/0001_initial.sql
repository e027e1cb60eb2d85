-- The whole provisioning domain.
--
-- Distribution: every table that grows with a customer's size (users, groups,
-- memberships, role mappings, audit events, role changes) has org_id leading
-- its primary key, every index and every foreign key, so that it can be
-- distributed by org_id (e.g. Citus create_distributed_table(..., 'org_id'))
-- without a rewrite. organizations and scim_tokens are small and are looked
-- up before the organisation is known (a slug, a token hash): they are meant
-- to be reference tables, replicated to every node.

CREATE TABLE organizations (
    org_id        uuid        NOT NULL,
    slug          text        NOT NULL,
    display_name  text        NOT NULL,
    default_role  text        NOT NULL DEFAULT 'member'
                  CHECK (default_role IN ('admin', 'boss', 'member')),
    -- last role-change sequence number handed out in this organisation
    role_seq      bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id),
    CONSTRAINT organizations_slug_format CHECK (slug ~ '^[a-z][a-z0-9-]{1,62}$')
);
CREATE UNIQUE INDEX organizations_slug_key ON organizations (slug);
CREATE INDEX organizations_created_idx ON organizations (created_at, org_id);

CREATE TABLE scim_tokens (
    org_id          uuid        NOT NULL REFERENCES organizations (org_id),
    token_id        uuid        NOT NULL,
    token_hash      bytea       NOT NULL CHECK (length(token_hash) = 32),  -- SHA-256 of the secret
    display_prefix  text        NOT NULL,
    description     text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    PRIMARY KEY (org_id, token_id)
);
CREATE UNIQUE INDEX scim_tokens_hash_key ON scim_tokens (token_hash);

CREATE TABLE users (
    org_id        uuid        NOT NULL REFERENCES organizations (org_id),
    user_id       uuid        NOT NULL,
    user_name     text        NOT NULL,
    external_id   text,
    display_name  text,
    active        boolean     NOT NULL DEFAULT true,
    -- the SCIM representation as stored: every attribute sent, minus id,
    -- meta, groups and password
    attributes    jsonb       NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, user_id)
);
-- userName is unique per organisation without regard to case (RFC 7643 §4.1.1)
CREATE UNIQUE INDEX users_org_user_name_key ON users (org_id, lower(user_name));
CREATE INDEX users_org_external_id_idx ON users (org_id, external_id);
CREATE INDEX users_org_created_idx ON users (org_id, created_at, user_id);

-- emails.value, lower-cased, one row a value: answers `emails.value eq` and
-- role lookups by email from an index
CREATE TABLE user_emails (
    org_id       uuid NOT NULL,
    user_id      uuid NOT NULL,
    value_lower  text NOT NULL,
    PRIMARY KEY (org_id, user_id, value_lower),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, user_id) ON DELETE CASCADE
);
CREATE INDEX user_emails_value_idx ON user_emails (org_id, value_lower);

CREATE TABLE groups (
    org_id        uuid        NOT NULL REFERENCES organizations (org_id),
    group_id      uuid        NOT NULL,
    display_name  text        NOT NULL,
    external_id   text,
    attributes    jsonb       NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, group_id)
);
CREATE UNIQUE INDEX groups_org_display_name_key ON groups (org_id, lower(display_name));
CREATE INDEX groups_org_external_id_idx ON groups (org_id, external_id);
CREATE INDEX groups_org_created_idx ON groups (org_id, created_at, group_id);

CREATE TABLE group_members (
    org_id      uuid        NOT NULL,
    group_id    uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, group_id, user_id),
    FOREIGN KEY (org_id, group_id) REFERENCES groups (org_id, group_id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, user_id) ON DELETE CASCADE
);
-- a user's groups (User.groups, role resolution)
CREATE INDEX group_members_user_idx ON group_members (org_id, user_id, group_id);

CREATE TABLE group_roles (
    org_id      uuid        NOT NULL,
    group_id    uuid        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('admin', 'boss', 'member')),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, group_id),
    FOREIGN KEY (org_id, group_id) REFERENCES groups (org_id, group_id) ON DELETE CASCADE
);

CREATE TABLE audit_events (
    org_id         uuid        NOT NULL REFERENCES organizations (org_id),
    event_id       bigint      GENERATED ALWAYS AS IDENTITY,
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    token_id       uuid,          -- the SCIM token that made the change; NULL for staff
    actor          text        NOT NULL,   -- 'scim' or 'admin'
    action         text        NOT NULL,   -- create, replace, patch, delete, ...
    resource_type  text        NOT NULL,   -- User, Group, RoleMapping, ...
    resource_id    text        NOT NULL,
    changed        text[]      NOT NULL DEFAULT '{}',  -- attribute names, never values
    PRIMARY KEY (org_id, event_id)
);
CREATE INDEX audit_events_resource_idx
    ON audit_events (org_id, resource_type, resource_id, event_id);

-- outbox of effective-role changes, written in the same transaction as the
-- change; seq is per organisation, gapless and in commit order
CREATE TABLE role_changes (
    org_id       uuid        NOT NULL REFERENCES organizations (org_id),
    seq          bigint      NOT NULL,
    user_id      uuid        NOT NULL,
    old_role     text,
    new_role     text,
    cause        text        NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, seq)
);
