"""`wando admin …`: staff operations against a running core over gRPC."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cli import activity, roles
from cli.client import Client, Result, command, duration
from cli.client import as_dict as _dict
from wando.provisioning.v1 import admin_service_pb2 as pb


def add_commands(commands: Any) -> None:
    admin = commands.add_parser("admin", help="administer organisations and SCIM tokens")
    admin.add_argument("--core", help="core address HOST:PORT (env WANDO_CORE)")
    admin.add_argument("--data-dir", help="where to find the credentials (env WANDO_DATA_DIR)")
    admin.add_argument("--json", action="store_true", help="print JSON for scripts")
    groups = admin.add_subparsers(dest="group", required=True, metavar="TOPIC")

    org = groups.add_parser("org", help="organisations").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = org.add_parser("create", help="create an organisation")
    create.add_argument("slug")
    create.add_argument("--name", default="", help="display name (default: the slug)")
    create.set_defaults(handler=command(org_create))
    show = org.add_parser("show", help="show one organisation")
    show.add_argument("org", help="id or slug")
    show.set_defaults(handler=command(org_show))
    org.add_parser("list", help="list organisations").set_defaults(handler=command(org_list))
    status = org.add_parser(
        "status", help="an organisation's connection at a glance, and the next step"
    )
    status.add_argument("org", help="id or slug")
    status.set_defaults(handler=command(org_status))

    token = groups.add_parser("token", help="SCIM bearer tokens").add_subparsers(
        required=True, metavar="ACTION"
    )
    issue = token.add_parser("issue", help="issue a token (the secret is shown once)")
    issue.add_argument("--org", required=True, help="organisation id or slug")
    issue.add_argument("--description", default="", help='e.g. "Okta production"')
    issue.add_argument("--expires-in", help="lifetime such as 90d, 12h or 30m (default: none)")
    issue.set_defaults(handler=command(token_issue))
    listing = token.add_parser("list", help="list an organisation's tokens")
    listing.add_argument("--org", required=True, help="organisation id or slug")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.set_defaults(handler=command(token_list))
    revoke = token.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("--org", required=True, help="organisation id or slug")
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=command(token_revoke))

    events = groups.add_parser("audit", help="list an organisation's audit events, newest first")
    events.add_argument("--org", required=True, help="organisation id or slug")
    events.add_argument("--type", default="", help="only this resource type (User, Group, ...)")
    events.add_argument("--resource", default="", help="only this resource id")
    events.add_argument("--limit", type=int, default=50, help="how many events (default 50)")
    events.set_defaults(handler=command(audit_list))

    roles.add_commands(groups)
    activity.add_commands(groups)


def _org_text(org: Any) -> str:
    return f"{org.slug}\t{org.id}\t{org.display_name}\tcreated {org.create_time.ToJsonString()}"


def org_create(client: Client, args: argparse.Namespace) -> Result:
    request = pb.CreateOrganizationRequest(slug=args.slug, display_name=args.name)
    org = client.call(client.admin.CreateOrganization, request).organization
    return {"json": _dict(org), "text": f"created organisation {org.slug} (id {org.id})"}


def org_show(client: Client, args: argparse.Namespace) -> Result:
    org = client.call(
        client.admin.GetOrganization, pb.GetOrganizationRequest(organization=args.org)
    ).organization
    return {"json": _dict(org), "text": _org_text(org)}


def _day(ts: Any) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC"))


def _token_status(t: Any) -> list[str]:
    token = t.token
    state = "revoked" if token.HasField("revoke_time") else "live"
    used = _day(token.last_used_time) if token.HasField("last_used_time") else "never"
    first = (
        f"  {token.id} {token.display_prefix} {state} {token.description!r}: "
        f"created {_day(token.create_time)}, last used {used}"
        + (f", client {t.client}" if t.client else "")
    )
    rate = f" ({t.errors_24h / t.requests_24h:.0%})" if t.requests_24h else ""
    second = (
        f"    last 24 h: {t.requests_24h} requests, {t.errors_24h} failed{rate}, "
        f"{t.unauthorized_24h} refused with 401"
    )
    lines = [first, second]
    if t.HasField("last_error"):
        day = t.last_error.request_time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d")
        lines.append(f"    last error: {day} {activity.line(t.last_error)}")
    return lines


def org_status(client: Client, args: argparse.Namespace) -> Result:
    s = client.call(
        client.admin.GetOrganizationStatus, pb.GetOrganizationStatusRequest(organization=args.org)
    )
    o = s.organization
    lines = [f"{o.slug} ({o.display_name}, id {o.id})", "", "Tokens"]
    for t in s.tokens:
        lines.extend(_token_status(t))
    if not s.tokens:
        lines.append("  none issued")
    lines += [
        "",
        "Pushed",
        f"  users: {s.active_users} active, {s.inactive_users} inactive; groups: {s.groups}",
        "",
        "Roles",
    ]
    names = roles.NAMES
    mapped = ", ".join(f"{m.display_name} → {names[m.role]}" for m in s.group_mappings)
    lines.append(f"  mapped groups: {mapped or 'none'}")
    if s.role_values:
        values = ", ".join(
            f"{v.value!r} → {names[v.role] if v.role else 'not mapped'} ({v.users} users)"
            for v in s.role_values
        )
        lines.append(f"  role values: {values}")
    if s.unmapped_groups:
        groups = ", ".join(f"{g.display_name} ({g.members})" for g in s.unmapped_groups)
        lines.append(f"  groups with members, not mapped: {groups}")
    lines.append(f"  default role {names[s.default_role]}: {s.default_role_users} active users")
    lines += ["", "Next steps"]
    lines += [f"  - {step}" for step in s.next_steps] or ["  none: the connection looks complete"]
    return {"json": _dict(s), "text": "\n".join(lines)}


def org_list(client: Client, args: argparse.Namespace) -> Result:
    orgs, token = [], ""
    while True:
        page = client.call(
            client.admin.ListOrganizations,
            pb.ListOrganizationsRequest(page_size=1000, page_token=token),
        )
        orgs.extend(page.organizations)
        token = page.next_page_token
        if not token:
            break
    text = "\n".join(_org_text(o) for o in orgs) or "no organisations yet"
    return {"json": [_dict(o) for o in orgs], "text": text}


def _expiry(text: str | None) -> Timestamp | None:
    if not text:
        return None
    ahead = duration(text, "dhm", f"--expires-in must look like 90d, 12h or 30m, got {text!r}")
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + ahead)
    return ts


def token_issue(client: Client, args: argparse.Namespace) -> Result:
    request = pb.IssueScimTokenRequest(
        organization=args.org, description=args.description, expire_time=_expiry(args.expires_in)
    )
    response = client.call(client.admin.IssueScimToken, request)
    org = client.call(
        client.admin.GetOrganization, pb.GetOrganizationRequest(organization=args.org)
    ).organization
    base_url = client.settings.scim_base_url
    expiry = (
        response.token.expire_time.ToJsonString()
        if response.token.HasField("expire_time")
        else "never"
    )
    text = "\n".join(
        [
            f"Issued SCIM token {response.token.id} for organisation {org.slug}.",
            "",
            "Secret (shown only this once; Wando keeps only a hash):",
            f"    {response.secret}",
            "",
            "What the customer enters in Okta",
            "(Provisioning → Integration → Configure API Integration):",
            f"    SCIM connector base URL:            {base_url}",
            "    Unique identifier field for users:  userName",
            "    Supported provisioning actions:     Import New Users and Profile Updates,",
            "                                        Push New Users, Push Profile Updates,",
            "                                        Push Groups",
            "    Authentication Mode:                HTTP Header",
            "    Authorization:                      the secret above (Okta adds 'Bearer ')",
            "",
            f"Expires: {expiry}.",
            f"Revoke with: wando admin token revoke --org {org.slug} {response.token.id}",
        ]
    )
    data = {
        "token": response.secret,
        "token_id": response.token.id,
        "organization": _dict(org),
        "scim_base_url": base_url,
        "metadata": _dict(response.token),
    }
    return {"json": data, "text": text}


def _token_text(token: Any) -> str:
    state = "revoked" if token.HasField("revoke_time") else "live"
    used = token.last_used_time.ToJsonString() if token.HasField("last_used_time") else "never used"
    return f"{token.id}\t{token.display_prefix}\t{state}\t{used}\t{token.description}"


def token_list(client: Client, args: argparse.Namespace) -> Result:
    tokens = client.call(
        client.admin.ListScimTokens,
        pb.ListScimTokensRequest(organization=args.org, show_revoked=args.all),
    ).tokens
    text = "\n".join(_token_text(t) for t in tokens) or "no tokens"
    return {"json": [_dict(t) for t in tokens], "text": text}


def token_revoke(client: Client, args: argparse.Namespace) -> Result:
    token = client.call(
        client.admin.RevokeScimToken,
        pb.RevokeScimTokenRequest(organization=args.org, token_id=args.token_id),
    ).token
    return {"json": _dict(token), "text": f"revoked token {token.id} ({token.display_prefix})"}


def audit_list(client: Client, args: argparse.Namespace) -> Result:
    found: list[Any] = []
    token = ""
    while len(found) < args.limit:
        request = pb.ListAuditEventsRequest(
            organization=args.org,
            resource_type=args.type,
            resource_id=args.resource,
            page_size=min(args.limit - len(found), 1000),
            page_token=token,
        )
        page = client.call(client.admin.ListAuditEvents, request)
        found.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    text = "\n".join(
        f"{e.occur_time.ToJsonString()}\t{e.actor}\t{e.action}\t{e.resource_type}\t"
        f"{e.resource_id}\t{','.join(e.changed_attributes)}"
        for e in found
    )
    return {"json": [_dict(e) for e in found], "text": text or "no events"}
