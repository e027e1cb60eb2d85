"""Discovery (RFC 7644 §4): /ServiceProviderConfig, /ResourceTypes, /Schemas.

They advertise exactly what works: PATCH, filters (up to MAX_COUNT results a
page), sorting, ETags, index and cursor paging (RFC 9865), /Bulk within its
configured limits; no password change; bearer tokens. The
schemas are scim2-models' RFC 7643 User, enterprise extension and Group.

They need no bearer token (RFC 7644 §4 allows that): they say nothing about
any organisation, and Okta and Entra send their token anyway, which is then
ignored here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    External,
    Filter,
    ForbiddenException,
    Group,
    Meta,
    NotFoundException,
    Pagination,
    Patch,
    Reference,
    ResourceType,
    ServiceProviderConfig,
    Sort,
    User,
)

from common.config import Settings
from common.wire import DEFAULT_COUNT, MAX_COUNT
from gateway.keys import SETTINGS
from gateway.mapping import list_response
from gateway.middlewares import public
from gateway.responses import scim_response

CTX = Context.RESOURCE_QUERY_RESPONSE


@cache
def service_provider_config(settings: Settings) -> dict[str, Any]:
    base = settings.scim_base_url
    config = ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(
            supported=True,
            max_operations=settings.bulk_max_operations,
            max_payload_size=settings.bulk_max_payload_bytes,
        ),
        filter=Filter(supported=True, max_results=MAX_COUNT),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        pagination=Pagination(
            cursor=True,
            index=True,
            default_pagination_method=Pagination.DefaultPaginationMethod.index,
            default_page_size=DEFAULT_COUNT,
            max_page_size=MAX_COUNT,
            cursor_timeout=settings.cursor_timeout_seconds,
        ),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="OAuth Bearer Token",
                description=(
                    "A SCIM token issued by Wando for the organisation, "
                    "sent as 'Authorization: Bearer <token>'"
                ),
                spec_uri=Reference[External]("https://www.rfc-editor.org/info/rfc6750"),
                primary=True,
            )
        ],
        meta=Meta(resource_type="ServiceProviderConfig", location=f"{base}/ServiceProviderConfig"),
    )
    dumped: dict[str, Any] = config.model_dump(scim_ctx=CTX)
    return dumped


@cache
def resource_types(base: str) -> dict[str, dict[str, Any]]:
    """By lower-cased name."""
    types = {
        "User": ResourceType.from_resource(User[EnterpriseUser]),  # type: ignore[misc]
        "Group": ResourceType.from_resource(Group),
    }
    types["User"].description = "User Account"
    out: dict[str, dict[str, Any]] = {}
    for name, resource_type in types.items():
        resource_type.meta = Meta(
            resource_type="ResourceType", location=f"{base}/ResourceTypes/{name}"
        )
        out[name.lower()] = resource_type.model_dump(scim_ctx=CTX)
    return out


@cache
def schemas(base: str) -> dict[str, dict[str, Any]]:
    """By lower-cased schema URN."""
    out: dict[str, dict[str, Any]] = {}
    for model in (User, EnterpriseUser, Group):
        schema = model.to_schema()
        schema.meta = Meta(resource_type="Schema", location=f"{base}/Schemas/{schema.id}")
        out[str(schema.id).lower()] = schema.model_dump(scim_ctx=CTX)
    return out


def _base(request: web.Request) -> str:
    return request.config_dict[SETTINGS].scim_base_url


def _no_filter(request: web.Request) -> None:
    # RFC 7644 §4: a filter on a discovery endpoint SHOULD get 403, so that no
    # client believes its conditions held
    if any(key.lower() == "filter" for key in request.query):
        raise ForbiddenException(detail="discovery endpoints do not support filtering")


def _listing(documents: dict[str, dict[str, Any]]) -> web.Response:
    items = list(documents.values())
    return scim_response(list_response(items, len(items), 1))


@public
async def get_service_provider_config(request: web.Request) -> web.Response:
    _no_filter(request)
    return scim_response(service_provider_config(request.config_dict[SETTINGS]))


@public
async def list_resource_types(request: web.Request) -> web.Response:
    _no_filter(request)
    return _listing(resource_types(_base(request)))


@public
async def get_resource_type(request: web.Request) -> web.Response:
    found = resource_types(_base(request)).get(request.match_info["name"].lower())
    if found is None:
        raise NotFoundException(detail=f"no resource type {request.match_info['name']!r}")
    return scim_response(found)


@public
async def list_schemas(request: web.Request) -> web.Response:
    _no_filter(request)
    return _listing(schemas(_base(request)))


@public
async def get_schema(request: web.Request) -> web.Response:
    found = schemas(_base(request)).get(request.match_info["id"].lower())
    if found is None:
        raise NotFoundException(detail=f"no schema {request.match_info['id']!r}")
    return scim_response(found)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ServiceProviderConfig", get_service_provider_config)
    app.router.add_get("/ResourceTypes", list_resource_types)
    app.router.add_get("/ResourceTypes/{name}", get_resource_type)
    app.router.add_get("/Schemas", list_schemas)
    app.router.add_get("/Schemas/{id}", get_schema)
