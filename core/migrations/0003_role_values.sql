-- Roles from the SCIM `roles` attribute (issue 9), for providers that push no
-- groups (Auth0) or send app-role assignments on the user (Entra ID).
--
-- role_value_mappings: which `roles[].value` grants which Wando role in an
-- organisation. Values match exactly (case-sensitive), as providers send
-- them. A user's effective role is the highest among mapped groups and mapped
-- values, under the same rule.
CREATE TABLE role_value_mappings (
    org_id  uuid NOT NULL REFERENCES organizations (org_id),
    value   text NOT NULL CHECK (length(value) BETWEEN 1 AND 4096),
    role    text NOT NULL CHECK (role IN ('admin', 'boss', 'member')),
    PRIMARY KEY (org_id, value)
);

-- each user's `roles[].value`s, one row a value, kept in step with the
-- document by every user write: role resolution joins it by user, and a
-- mapping change finds the users it affects by value, both from an index
CREATE TABLE user_role_values (
    org_id   uuid NOT NULL,
    user_id  uuid NOT NULL,
    value    text NOT NULL,
    PRIMARY KEY (org_id, user_id, value),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, user_id) ON DELETE CASCADE
);
CREATE INDEX user_role_values_value_idx ON user_role_values (org_id, value, user_id);

INSERT INTO user_role_values (org_id, user_id, value)
SELECT u.org_id, u.user_id, r.entry ->> 'value'
FROM users u
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(u.attributes -> 'roles') = 'array'
         THEN u.attributes -> 'roles' ELSE '[]'::jsonb END) AS r(entry)
WHERE jsonb_typeof(r.entry -> 'value') = 'string' AND r.entry ->> 'value' <> ''
ON CONFLICT DO NOTHING;
