"""AdminService: organisations and SCIM tokens, for Wando staff."""

from __future__ import annotations

from datetime import UTC

import asyncpg

from core import organizations, tokens
from core.auth import Guard
from core.rpc import Ctx
from wando.provisioning.v1 import admin_service_pb2 as pb
from wando.provisioning.v1 import admin_service_pb2_grpc


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
