-- The effective-role rule, in one place (issue 16 §3; it was written four
-- times, in Python and SQL). Resolution (core.roles.RESOLVE_SQL), listing by
-- role (core.role_service), the default role's users (core.role_mappings),
-- a new user's first role (core.users.INSERT_USER) and the role cache's fill
-- all read what is defined here:
--
--   a user's effective role is the highest (admin > boss > member) of their
--   grants: the mapped groups they belong to and the mapped values of their
--   SCIM `roles` attribute; else the organisation's default role; a
--   deactivated user has none.

-- the order of roles: higher wins
CREATE FUNCTION role_rank(role text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE role WHEN 'member' THEN 1 WHEN 'boss' THEN 2 WHEN 'admin' THEN 3 END;

CREATE FUNCTION higher_role(a text, b text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN role_rank(b) > coalesce(role_rank(a), 0) THEN b ELSE a END;

-- the highest of a set of roles (NULL for none)
CREATE AGGREGATE top_role(text) (SFUNC = higher_role, STYPE = text, PARALLEL = SAFE);

-- the rule itself, given the highest grant (NULL: none) and the default
CREATE FUNCTION effective_role(active boolean, granted text, default_role text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN active THEN coalesce(granted, default_role) END;

-- every grant of every user, one row each: a mapped group the user belongs to
-- (group_id, display_name) or a mapped value of their `roles` (role_value)
CREATE VIEW user_grants AS
SELECT m.org_id, m.user_id, r.group_id, g.display_name, NULL::text AS role_value, r.role
FROM group_members m
JOIN group_roles r ON r.org_id = m.org_id AND r.group_id = m.group_id
JOIN groups g ON g.org_id = r.org_id AND g.group_id = r.group_id
UNION ALL
SELECT v.org_id, v.user_id, NULL::uuid, NULL::text, v.value, vm.role
FROM user_role_values v
JOIN role_value_mappings vm ON vm.org_id = v.org_id AND vm.value = v.value;

-- every user with their effective role (role; NULL: none) and their highest
-- grant (granted; NULL: none, the role is the default or none)
CREATE VIEW effective_roles AS
SELECT u.org_id, u.user_id, u.user_name, u.external_id, u.active, t.granted,
       effective_role(u.active, t.granted, o.default_role) AS role
FROM users u
JOIN organizations o ON o.org_id = u.org_id
CROSS JOIN LATERAL (
    SELECT top_role(g.role) AS granted
    FROM user_grants g
    WHERE g.org_id = u.org_id AND g.user_id = u.user_id
) AS t;

-- The outbox says which users' answers changed, not only whose role did: a
-- cache of GetEffectiveRole's answers (core.role_cache) follows it, and an
-- answer also names the granting groups and values, the userName, and says
-- whether the user exists. A row without a user (user_id NULL) may concern
-- every user of the organisation (a mapped group renamed).
ALTER TABLE role_changes ALTER COLUMN user_id DROP NOT NULL;
