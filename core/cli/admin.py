"""`wando admin …`: staff operations against a running core over gRPC."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from core import auth, channels, config, tls
from wando.provisioning.v1 import admin_service_pb2 as pb
from wando.provisioning.v1 import admin_service_pb2_grpc

TIMEOUT_SECONDS = 10.0


class CliError(Exception):
    """A one-line failure for the person at the terminal."""


def add_commands(commands: Any) -> None:
    admin = commands.add_parser("admin", help="administer organisations and SCIM tokens")
    admin.add_argument("--core", help="core address HOST:PORT (env WANDO_CORE)")
    admin.add_argument("--data-dir", help="where to find the admin credential (env WANDO_DATA_DIR)")
    admin.add_argument("--json", action="store_true", help="print JSON for scripts")
    groups = admin.add_subparsers(dest="group", required=True, metavar="TOPIC")

    org = groups.add_parser("org", help="organisations").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = org.add_parser("create", help="create an organisation")
    create.add_argument("slug")
    create.add_argument("--name", default="", help="display name (default: the slug)")
    create.set_defaults(handler=_run(org_create))
    show = org.add_parser("show", help="show one organisation")
    show.add_argument("org", help="id or slug")
    show.set_defaults(handler=_run(org_show))
    org.add_parser("list", help="list organisations").set_defaults(handler=_run(org_list))

    token = groups.add_parser("token", help="SCIM bearer tokens").add_subparsers(
        required=True, metavar="ACTION"
    )
    issue = token.add_parser("issue", help="issue a token (the secret is shown once)")
    issue.add_argument("--org", required=True, help="organisation id or slug")
    issue.add_argument("--description", default="", help='e.g. "Okta production"')
    issue.add_argument("--expires-in", help="lifetime such as 90d, 12h or 30m (default: none)")
    issue.set_defaults(handler=_run(token_issue))
    listing = token.add_parser("list", help="list an organisation's tokens")
    listing.add_argument("--org", required=True, help="organisation id or slug")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.set_defaults(handler=_run(token_list))
    revoke = token.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("--org", required=True, help="organisation id or slug")
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=_run(token_revoke))

    events = groups.add_parser("audit", help="list an organisation's audit events, newest first")
    events.add_argument("--org", required=True, help="organisation id or slug")
    events.add_argument("--type", default="", help="only this resource type (User, Group, ...)")
    events.add_argument("--resource", default="", help="only this resource id")
    events.add_argument("--limit", type=int, default=50, help="how many events (default 50)")
    events.set_defaults(handler=_run(audit_list))

    from core.cli import roles  # roles' commands build on this module's Admin

    roles.add_commands(groups)


class Admin:
    """A connected AdminService stub that sends the admin credential."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.settings = config.load(data_dir=args.data_dir, core=args.core)
        credential = auth.read_credential(self.settings.admin_token, self.settings.data_dir)
        if not credential:
            raise CliError(
                "no admin credential: set WANDO_ADMIN_TOKEN, or run on the machine where "
                f"`wando serve` created {self.settings.data_dir / auth.ADMIN_TOKEN_FILE}"
            )
        self.metadata = (("authorization", f"Bearer {credential}"),)
        # WANDO_CORE in any of the forms the gateway takes (one address, a list, dns:///)
        try:
            self.channel = channels.sync_channel(
                self.settings.core_address, channels.client_tls(self.settings)
            )
        except tls.TLSFilesError as exc:
            raise CliError(f"WANDO_CORE_TLS_*: {exc}") from None
        self.stub = admin_service_pb2_grpc.AdminServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def call(self, method: str, request: Message) -> Any:
        try:
            return getattr(self.stub, method)(
                request, metadata=self.metadata, timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            raise CliError(explain(exc, self.settings.core_address)) from None


def explain(exc: grpc.RpcError, address: str) -> str:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        # gRPC's details tell a refused connection from a failed TLS handshake
        details = " ".join(str(exc.details()).split())
        return (
            f"cannot reach the core at {address} ({code.name}: {details}): "
            "is `wando serve` running, and do WANDO_CORE_TLS_* match its TLS?"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "the core refused the admin credential (check WANDO_ADMIN_TOKEN)"
    return f"{code.name}: {exc.details()}"


def _run(action: Callable[[Admin, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            admin = Admin(args)
            try:
                result = action(admin, args)
            finally:
                admin.channel.close()
        except CliError as exc:
            print(f"wando: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(result["json"], indent=2))
        else:
            print(result["text"])
        return 0

    return handler


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _org_text(org: Any) -> str:
    return f"{org.slug}\t{org.id}\t{org.display_name}\tcreated {org.create_time.ToJsonString()}"


def org_create(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    request = pb.CreateOrganizationRequest(slug=args.slug, display_name=args.name)
    org = admin.call("CreateOrganization", request).organization
    return {"json": _dict(org), "text": f"created organisation {org.slug} (id {org.id})"}


def org_show(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    org = admin.call(
        "GetOrganization", pb.GetOrganizationRequest(organization=args.org)
    ).organization
    return {"json": _dict(org), "text": _org_text(org)}


def org_list(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    orgs, token = [], ""
    while True:
        page = admin.call(
            "ListOrganizations", pb.ListOrganizationsRequest(page_size=1000, page_token=token)
        )
        orgs.extend(page.organizations)
        token = page.next_page_token
        if not token:
            break
    text = "\n".join(_org_text(o) for o in orgs) or "no organisations yet"
    return {"json": [_dict(o) for o in orgs], "text": text}


_DURATION = re.compile(r"^(\d+)([dhm])$")


def _expiry(text: str | None) -> Timestamp | None:
    if not text:
        return None
    match = _DURATION.match(text)
    if not match:
        raise CliError(f"--expires-in must look like 90d, 12h or 30m, got {text!r}")
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match[2]]
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + timedelta(**{unit: int(match[1])}))
    return ts


def token_issue(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    request = pb.IssueScimTokenRequest(
        organization=args.org, description=args.description, expire_time=_expiry(args.expires_in)
    )
    response = admin.call("IssueScimToken", request)
    org = admin.call(
        "GetOrganization", pb.GetOrganizationRequest(organization=args.org)
    ).organization
    base_url = admin.settings.scim_base_url
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


def token_list(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    tokens = admin.call(
        "ListScimTokens", pb.ListScimTokensRequest(organization=args.org, show_revoked=args.all)
    ).tokens
    text = "\n".join(_token_text(t) for t in tokens) or "no tokens"
    return {"json": [_dict(t) for t in tokens], "text": text}


def token_revoke(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    token = admin.call(
        "RevokeScimToken", pb.RevokeScimTokenRequest(organization=args.org, token_id=args.token_id)
    ).token
    return {"json": _dict(token), "text": f"revoked token {token.id} ({token.display_prefix})"}


def audit_list(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
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
        page = admin.call("ListAuditEvents", request)
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
