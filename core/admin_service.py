"""AdminService: organisations and SCIM tokens, for Wando staff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from core import activity, audit, organization_status, organizations, role_mappings, roles, tokens
from core.auth import Guard
from core.rpc import Ctx
from wando.provisioning.v1 import admin_service_pb2 as pb
from wando.provisioning.v1 import admin_service_pb2_grpc, roles_pb2


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, pool: asyncpg.Pool, guard: Guard, authenticator: tokens.Authenticator
    ) -> None:
        self._pool = pool
        self._guard = guard
        self._authenticator = authenticator

    async def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: Ctx
    ) -> pb.CreateOrganizationResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn:
            row = await organizations.create(conn, request.slug, request.display_name)
        return pb.CreateOrganizationResponse(organization=organizations.to_proto(row))

    async def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: Ctx
    ) -> pb.GetOrganizationResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn:
            row = await organizations.resolve(conn, request.organization)
        return pb.GetOrganizationResponse(organization=organizations.to_proto(row))

    async def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: Ctx
    ) -> pb.ListOrganizationsResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn:
            rows, next_token = await organizations.list_page(
                conn, request.page_size, request.page_token
            )
        return pb.ListOrganizationsResponse(
            organizations=[organizations.to_proto(r) for r in rows], next_page_token=next_token
        )

    async def IssueScimToken(
        self, request: pb.IssueScimTokenRequest, context: Ctx
    ) -> pb.IssueScimTokenResponse:
        self._guard.admin(context)
        expires = (
            request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None
        )
        async with self._pool.acquire() as conn, conn.transaction():
            org = await organizations.resolve(conn, request.organization)
            row, secret = await tokens.issue(conn, org["org_id"], request.description, expires)
        return pb.IssueScimTokenResponse(token=tokens.to_proto(row), secret=secret)

    async def ListScimTokens(
        self, request: pb.ListScimTokensRequest, context: Ctx
    ) -> pb.ListScimTokensResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn:
            org = await organizations.resolve(conn, request.organization)
            rows = await tokens.list_for(conn, org["org_id"], request.show_revoked)
        return pb.ListScimTokensResponse(tokens=[tokens.to_proto(r) for r in rows])

    async def RevokeScimToken(
        self, request: pb.RevokeScimTokenRequest, context: Ctx
    ) -> pb.RevokeScimTokenResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn, conn.transaction():
            org = await organizations.resolve(conn, request.organization)
            row = await tokens.revoke(conn, org["org_id"], request.token_id)
        return pb.RevokeScimTokenResponse(token=tokens.to_proto(row))

    async def AuthenticateScimToken(
        self, request: pb.AuthenticateScimTokenRequest, context: Ctx
    ) -> pb.AuthenticateScimTokenResponse:
        self._guard.admin(context)
        principal = await self._authenticator.authenticate(request.secret)
        async with self._pool.acquire() as conn:
            org = await organizations.resolve(conn, str(principal.org_id))
        return pb.AuthenticateScimTokenResponse(
            organization=organizations.to_proto(org), token_id=str(principal.token_id)
        )

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Ctx
    ) -> pb.ListAuditEventsResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn:
            org = await organizations.resolve(conn, request.organization)
            rows, next_token = await audit.list_page(
                conn,
                org["org_id"],
                request.resource_type,
                request.resource_id,
                request.page_size,
                request.page_token,
            )
        return pb.ListAuditEventsResponse(
            events=[audit.to_proto(r) for r in rows], next_page_token=next_token
        )

    async def SetGroupRole(
        self, request: pb.SetGroupRoleRequest, context: Ctx
    ) -> pb.SetGroupRoleResponse:
        self._guard.admin(context)
        role = role_mappings.role_name(roles.FROM_PROTO.get(request.role), "role")
        async with self._pool.acquire() as conn, conn.transaction():
            org = await organizations.resolve(conn, request.organization)
            mapping, changed = await role_mappings.set_mapping(
                conn, org["org_id"], request.group, role
            )
        return pb.SetGroupRoleResponse(
            mapping=roles_pb2.GroupRoleMapping(
                group_id=str(mapping.group_id),
                display_name=mapping.display_name,
                role=roles.TO_PROTO[role],
            ),
            changed_users=changed,
            sequence=roles.SEQUENCE_PRODUCED.get(),
        )

    async def ClearGroupRole(
        self, request: pb.ClearGroupRoleRequest, context: Ctx
    ) -> pb.ClearGroupRoleResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn, conn.transaction():
            org = await organizations.resolve(conn, request.organization)
            _, changed = await role_mappings.set_mapping(conn, org["org_id"], request.group, None)
        return pb.ClearGroupRoleResponse(
            changed_users=changed, sequence=roles.SEQUENCE_PRODUCED.get()
        )

    async def SetRoleValueMapping(
        self, request: pb.SetRoleValueMappingRequest, context: Ctx
    ) -> pb.SetRoleValueMappingResponse:
        self._guard.admin(context)
        role = role_mappings.role_name(roles.FROM_PROTO.get(request.role), "role")
        async with self._pool.acquire() as conn, conn.transaction():
            org = await organizations.resolve(conn, request.organization)
            holders, changed = await role_mappings.set_value_mapping(
                conn, org["org_id"], request.value, role
            )
        return pb.SetRoleValueMappingResponse(
            mapping=roles_pb2.RoleValueMapping(
                value=request.value, role=roles.TO_PROTO[role], users=holders
            ),
            changed_users=changed,
            sequence=roles.SEQUENCE_PRODUCED.get(),
        )

    async def ClearRoleValueMapping(
        self, request: pb.ClearRoleValueMappingRequest, context: Ctx
    ) -> pb.ClearRoleValueMappingResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn, conn.transaction():
            org = await organizations.resolve(conn, request.organization)
            _, changed = await role_mappings.set_value_mapping(
                conn, org["org_id"], request.value, None
            )
        return pb.ClearRoleValueMappingResponse(
            changed_users=changed, sequence=roles.SEQUENCE_PRODUCED.get()
        )

    async def ListGroupRoles(
        self, request: pb.ListGroupRolesRequest, context: Ctx
    ) -> pb.ListGroupRolesResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn:
            org = await organizations.resolve(conn, request.organization)
            listing = await role_mappings.list_mappings(conn, org["org_id"])
        return pb.ListGroupRolesResponse(
            mappings=[
                roles_pb2.GroupRoleMapping(
                    group_id=str(r["group_id"]),
                    display_name=r["display_name"],
                    role=roles.TO_PROTO[r["role"]],
                )
                for r in listing.groups
            ],
            default_role=roles.TO_PROTO[listing.default_role],
            role_values=[
                roles_pb2.RoleValueMapping(
                    value=r["value"], role=roles.TO_PROTO[r["role"]], users=r["users"]
                )
                for r in listing.role_values
            ],
        )

    async def SetDefaultRole(
        self, request: pb.SetDefaultRoleRequest, context: Ctx
    ) -> pb.SetDefaultRoleResponse:
        self._guard.admin(context)
        role = role_mappings.role_name(roles.FROM_PROTO.get(request.role), "role")
        async with self._pool.acquire() as conn, conn.transaction():
            org = await organizations.resolve(conn, request.organization)
            changed = await role_mappings.set_default(conn, org["org_id"], role)
        return pb.SetDefaultRoleResponse(
            changed_users=changed, sequence=roles.SEQUENCE_PRODUCED.get()
        )

    async def PreviewRoleChanges(
        self, request: pb.PreviewRoleChangesRequest, context: Ctx
    ) -> pb.PreviewRoleChangesResponse:
        self._guard.admin(context)
        default = None
        if request.default_role != roles_pb2.ROLE_UNSPECIFIED:
            default = role_mappings.role_name(
                roles.FROM_PROTO.get(request.default_role), "default_role"
            )
        proposed: list[tuple[role_mappings.Target, str | None]] = []
        for mapping in request.mappings:
            kind = mapping.WhichOneof("target") or "group"
            role = roles.FROM_PROTO.get(mapping.role)
            proposed.append(
                (
                    (kind, getattr(mapping, kind)),
                    None if role is None else role_mappings.role_name(role, "role"),
                )
            )
        async with self._pool.acquire() as conn:
            org = await organizations.resolve(conn, request.organization)
            changes = await role_mappings.preview(conn, org["org_id"], proposed, default)
        return pb.PreviewRoleChangesResponse(
            changes=[
                pb.PreviewedChange(
                    user_id=str(c.user_id),
                    user_name=c.user_name,
                    old_role=roles.TO_PROTO[c.old_role],
                    new_role=roles.TO_PROTO[c.new_role],
                )
                for c in changes
            ]
        )

    async def ListActivity(
        self, request: pb.ListActivityRequest, context: Ctx
    ) -> pb.ListActivityResponse:
        self._guard.admin(context)
        times: dict[str, datetime] = {}
        if request.HasField("start_time"):
            times["since"] = request.start_time.ToDatetime(tzinfo=UTC)
        if request.HasField("end_time"):
            times["before"] = request.end_time.ToDatetime(tzinfo=UTC)
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            where = await activity.resolve_match(
                conn, request.organization, request.filter, **times
            )
            rows, next_token = await activity.list_page(
                conn, where, request.page_size, request.page_token
            )
            watch_after = await activity.last_chunk(conn, where.org_id)
        return pb.ListActivityResponse(
            entries=[activity.to_proto(r) for r in rows],
            next_page_token=next_token,
            watch_after=watch_after,
        )

    async def WatchActivity(
        self, request: pb.WatchActivityRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchActivityResponse]:
        self._guard.admin(context)
        async with self._pool.acquire() as conn:
            where = await activity.resolve_match(conn, request.organization, request.filter)
        start = (
            request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
        )
        async for row in activity.watch(self._pool, where, start, request.after):
            yield pb.WatchActivityResponse(entry=activity.to_proto(row))

    async def GetOrganizationStatus(
        self, request: pb.GetOrganizationStatusRequest, context: Ctx
    ) -> pb.GetOrganizationStatusResponse:
        self._guard.admin(context)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            org = await organizations.resolve(conn, request.organization)
            return await organization_status.status(conn, org)
