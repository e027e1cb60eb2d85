"""The admin credential guards every AdminService method."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.support import ADMIN, bearer, new_org_with_token
from wando.provisioning.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    group_service_pb2,
    group_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
async def test_every_admin_method_refuses_missing_wrong_and_scim_credentials(
    channel: grpc.aio.Channel, method: str
) -> None:
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    _, scim_secret = await new_org_with_token(stub, "acme")
    descriptor = SERVICE.methods_by_name[method]
    request_class = getattr(admin_service_pb2, descriptor.input_type.name)
    for metadata in (
        (),
        bearer("wrong"),
        bearer(scim_secret),
        (("authorization", ADMIN[0][1].replace("Bearer ", "Basic ")),),
    ):
        call = getattr(stub, method)(request_class(), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await (call.read() if descriptor.server_streaming else call)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata


async def test_errors_carry_a_useful_message_and_reason(channel: grpc.aio.Channel) -> None:
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    await new_org_with_token(stub, "acme")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrganization(
            admin_service_pb2.CreateOrganizationRequest(slug="acme"), metadata=ADMIN
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "acme" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrganization(
            admin_service_pb2.CreateOrganizationRequest(slug="Bad Slug!"), metadata=ADMIN
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "slug" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetOrganization(
            admin_service_pb2.GetOrganizationRequest(organization="nope"), metadata=ADMIN
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListOrganizations(
            admin_service_pb2.ListOrganizationsRequest(page_token="garbage!"), metadata=ADMIN
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_organisations_page_in_creation_order(channel: grpc.aio.Channel) -> None:
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    slugs = [f"org-{i:02d}" for i in range(7)]
    for slug in slugs:
        await stub.CreateOrganization(
            admin_service_pb2.CreateOrganizationRequest(slug=slug), metadata=ADMIN
        )
    seen, token = [], ""
    while True:
        page = await stub.ListOrganizations(
            admin_service_pb2.ListOrganizationsRequest(page_size=3, page_token=token),
            metadata=ADMIN,
        )
        assert len(page.organizations) <= 3
        seen += [o.slug for o in page.organizations]
        token = page.next_page_token
        if not token:
            break
    assert seen == slugs
    by_id = await stub.GetOrganization(
        admin_service_pb2.GetOrganizationRequest(organization=seen and page.organizations[0].id),
        metadata=ADMIN,
    )
    assert by_id.organization.slug == "org-06"


SCIM_SERVICES = [
    (user_service_pb2, user_service_pb2_grpc.UserServiceStub, "UserService"),
    (group_service_pb2, group_service_pb2_grpc.GroupServiceStub, "GroupService"),
]


@pytest.mark.parametrize(
    ("module", "stub_class", "method"),
    [
        (module, stub, method.name)
        for module, stub, name in SCIM_SERVICES
        for method in module.DESCRIPTOR.services_by_name[name].methods
    ],
)
async def test_every_scim_method_needs_an_organisations_token(
    channel: grpc.aio.Channel, module: Any, stub_class: Any, method: str
) -> None:
    """The admin credential is not a SCIM token: it belongs to no organisation."""
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    _, scim_secret = await new_org_with_token(admin, "acme")
    stub = stub_class(channel)
    service = module.DESCRIPTOR.services_by_name[stub_class.__name__.removesuffix("Stub")]
    request_class = getattr(module, service.methods_by_name[method].input_type.name)
    for metadata in ((), ADMIN, bearer("wando_scim_forged"), bearer(scim_secret + "x")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, method)(request_class(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method, metadata)
