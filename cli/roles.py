"""`wando admin roles …`: group → role and role value → role mappings (admin
credential), and effective roles (RoleService, service credential)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from cli.client import SERVICE, Client, CliError, Result, command, streaming
from cli.client import as_dict as _dict
from wando.provisioning.v1 import admin_service_pb2 as pb
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import roles_pb2

ROLES = {
    "admin": roles_pb2.ROLE_ADMIN,
    "boss": roles_pb2.ROLE_BOSS,
    "member": roles_pb2.ROLE_MEMBER,
}
NAMES = {v: k for k, v in ROLES.items()} | {roles_pb2.ROLE_UNSPECIFIED: "none"}
SOURCES = {
    roles_pb2.ROLE_SOURCE_GROUP: "from group",
    roles_pb2.ROLE_SOURCE_DEFAULT: "the organisation's default (in no mapped group)",
    roles_pb2.ROLE_SOURCE_DEACTIVATED: "the user is deactivated",
    roles_pb2.ROLE_SOURCE_ROLES_ATTRIBUTE: "from the SCIM roles attribute",
}


def add_commands(topics: Any) -> None:
    roles = topics.add_parser(
        "roles", help="group → role and role value → role mappings, and effective roles"
    )
    actions = roles.add_subparsers(required=True, metavar="ACTION")

    def org_command(name: str, text: str) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
        cmd.add_argument("--org", required=True, help="organisation id or slug")
        return cmd

    def what(cmd: argparse.ArgumentParser) -> None:
        which = cmd.add_mutually_exclusive_group(required=True)
        which.add_argument("--group", help="a group's id or displayName")
        which.add_argument(
            "--value", help="a value of the users' SCIM roles attribute, exactly as sent"
        )

    cmd = org_command("map", "map a group, or a value of the SCIM roles attribute, to a role")
    what(cmd)
    cmd.add_argument("--role", required=True, choices=sorted(ROLES))
    cmd.set_defaults(handler=command(roles_map))
    cmd = org_command("unmap", "remove a group's or a role value's mapping")
    what(cmd)
    cmd.set_defaults(handler=command(roles_unmap))
    org_command(
        "list", "list group and role value mappings, role values users carry, the default role"
    ).set_defaults(handler=command(roles_list))
    cmd = org_command("default", "set the role of active users in no mapped group")
    cmd.add_argument("--role", required=True, choices=sorted(ROLES))
    cmd.set_defaults(handler=command(roles_default))
    cmd = org_command("preview", "dry run: whose role would a mapping change change")
    what(cmd)
    cmd.add_argument("--role", required=True, choices=[*sorted(ROLES), "none"])
    cmd.set_defaults(handler=command(roles_preview))
    cmd = org_command("show", "a user's effective role and why")
    cmd.add_argument("--user", required=True, help="userName, email, id or externalId")
    cmd.set_defaults(handler=command(roles_show, SERVICE))
    cmd = org_command("watch", "print every effective-role change as it happens")
    cmd.add_argument("--after", type=int, default=0, help="start after this sequence number")
    cmd.set_defaults(handler=streaming(roles_watch, SERVICE))


def roles_map(client: Client, args: argparse.Namespace) -> Result:
    role = ROLES[args.role]
    if args.value is not None:
        by_value = pb.SetRoleValueMappingRequest(organization=args.org, value=args.value, role=role)
        response = client.call(client.admin.SetRoleValueMapping, by_value)
        text = (
            f"role value {args.value!r} → {args.role} (carried by {response.mapping.users} users;"
            f" {response.changed_users} users' role changed)"
        )
        return {"json": _dict(response), "text": text}
    request = pb.SetGroupRoleRequest(organization=args.org, group=args.group, role=role)
    response = client.call(client.admin.SetGroupRole, request)
    m = response.mapping
    text = f"{m.display_name} → {args.role} ({response.changed_users} users' role changed)"
    return {"json": _dict(response), "text": text}


def roles_unmap(client: Client, args: argparse.Namespace) -> Result:
    if args.value is not None:
        response = client.call(
            client.admin.ClearRoleValueMapping,
            pb.ClearRoleValueMappingRequest(organization=args.org, value=args.value),
        )
    else:
        response = client.call(
            client.admin.ClearGroupRole,
            pb.ClearGroupRoleRequest(organization=args.org, group=args.group),
        )
    return {
        "json": _dict(response),
        "text": f"unmapped ({response.changed_users} users' role changed)",
    }


def roles_list(client: Client, args: argparse.Namespace) -> Result:
    response = client.call(
        client.admin.ListGroupRoles, pb.ListGroupRolesRequest(organization=args.org)
    )
    lines = [f"group {m.display_name}\t{NAMES[m.role]}\t{m.group_id}" for m in response.mappings]
    lines += [
        f"role value {v.value!r}\t{NAMES[v.role] if v.role else 'not mapped'}\t{v.users} users"
        for v in response.role_values
    ]
    lines.append(f"(default role: {NAMES[response.default_role]})")
    return {"json": _dict(response), "text": "\n".join(lines)}


def roles_default(client: Client, args: argparse.Namespace) -> Result:
    request = pb.SetDefaultRoleRequest(organization=args.org, role=ROLES[args.role])
    response = client.call(client.admin.SetDefaultRole, request)
    return {
        "json": _dict(response),
        "text": f"default role {args.role} ({response.changed_users} users' role changed)",
    }


def roles_preview(client: Client, args: argparse.Namespace) -> Result:
    role = ROLES.get(args.role, roles_pb2.ROLE_UNSPECIFIED)
    proposed = (
        pb.ProposedMapping(role_value=args.value, role=role)
        if args.value is not None
        else pb.ProposedMapping(group=args.group, role=role)
    )
    request = pb.PreviewRoleChangesRequest(organization=args.org, mappings=[proposed])
    response = client.call(client.admin.PreviewRoleChanges, request)
    lines = [f"{c.user_name}\t{NAMES[c.old_role]} → {NAMES[c.new_role]}" for c in response.changes]
    return {"json": _dict(response), "text": "\n".join(lines) or "no user's role would change"}


def _selectors(user: str) -> list[rpb.UserSelector]:
    if "@" in user:
        return [rpb.UserSelector(user_name=user), rpb.UserSelector(email=user)]
    return [
        rpb.UserSelector(user_id=user),
        rpb.UserSelector(user_name=user),
        rpb.UserSelector(external_id=user),
    ]


def roles_show(client: Client, args: argparse.Namespace) -> Result:
    request = rpb.BatchGetEffectiveRolesRequest(
        organization=args.org,
        users=_selectors(args.user),
        consistency=rpb.Consistency(fully_consistent=True),  # staff read what they just did
    )
    response = client.call(client.roles.BatchGetEffectiveRoles, request)
    found = next((e.role for e in response.entries if e.found), None)
    if found is None:
        raise CliError(f"no user {args.user!r} in {args.org}")
    why = SOURCES.get(found.source, "")
    if found.source == roles_pb2.ROLE_SOURCE_GROUP:
        why += " " + ", ".join(g.display_name for g in found.granted_by)
    elif found.source == roles_pb2.ROLE_SOURCE_ROLES_ATTRIBUTE:
        why += " " + ", ".join(repr(v.value) for v in found.granted_by_values)
    text = f"{found.user_name}: {NAMES[found.role]} ({why})"
    return {"json": _dict(found), "text": text}


def roles_watch(client: Client, args: argparse.Namespace) -> Iterator[Result]:
    request = rpb.WatchRoleChangesRequest(organization=args.org, after_sequence=args.after)
    for response in client.stream(client.roles.WatchRoleChanges, request):
        if not response.HasField("change"):
            continue  # an idle checkpoint
        c = response.change
        text = (
            f"{c.sequence}\t{c.change_time.ToJsonString()}\t{c.user_id}\t"
            f"{NAMES[c.old_role]} → {NAMES[c.new_role]}\t{c.cause}"
        )
        yield {"json": _dict(c), "text": text}
