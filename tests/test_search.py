"""core.search: the statement behind POST /.search (tests/gateway/test_root_search.py
exercises it through the gateway), and the filter and sort rules across types."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest

from core import filters, search
from core.errors import InvalidArgument, InvalidFilter
from core.schema import group_schema, user_schema
from tests.support import ADMIN
from wando.provisioning.v1 import scim_pb2, search_service_pb2_grpc
from wando.provisioning.v1 import search_service_pb2 as pb

BOTH = (user_schema(), group_schema())

SEED_USERS = """
INSERT INTO users (org_id, user_id, user_name, attributes)
SELECT $1, gen_random_uuid(), 'user' || i, jsonb_build_object('userName', 'user' || i)
FROM generate_series(1, $2::int) AS i
"""
SEED_GROUPS = """
INSERT INTO groups (org_id, group_id, display_name, attributes)
SELECT $1, gen_random_uuid(), 'group' || i, jsonb_build_object('displayName', 'group' || i)
FROM generate_series(1, $2::int) AS i
"""


async def test_an_unfiltered_page_merges_the_two_creation_indexes(pool: asyncpg.Pool) -> None:
    """O(page), not O(organisation): no sort of every user and group."""
    orgs = []
    for slug, users, groups in (("acme", 4000, 1000), ("globex", 12000, 3000)):
        org_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO organizations (org_id, slug, display_name) VALUES ($1, $2, $2)",
            org_id,
            slug,
        )
        await pool.execute(SEED_USERS, org_id, users)
        await pool.execute(SEED_GROUPS, org_id, groups)
        orgs.append(org_id)
    await pool.execute("ANALYZE")
    async with pool.acquire() as conn:
        for order in (scim_pb2.SORT_ORDER_ASCENDING, scim_pb2.SORT_ORDER_DESCENDING):
            query = scim_pb2.ListQuery(start_index=201, count=100, sort_order=order)
            params = filters.Params(orgs[0])
            sql, _ = search.page_statement(query, params)
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params.values))
            assert "Merge Append" in plan, plan
            assert "users_org_created_idx" in plan and "groups_org_created_idx" in plan, plan
            assert "Seq Scan on users" not in plan and "Seq Scan on groups" not in plan, plan
            found = await conn.fetch(sql, *params.values)
            assert len(found) == 100 and found[0]["total_results"] == 0  # no kept counts seeded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('nosuch eq "x"', 'unknown attribute "nosuch"'),
        ('urn:example:nope:attr eq "x"', 'unknown schema "urn:example:nope"'),
        ('emails.nosuch eq "x"', 'unknown sub-attribute "nosuch" of "emails"'),
        ('userName.x eq "y"', '"userName" has no sub-attributes'),
        ('members.$ref eq "x"', '"members.$ref" cannot be used'),
        ('active eq "yes"', '"active" is a boolean'),
    ],
)
def test_what_no_type_has_is_an_error(text: str, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        filters.compile_filter_across(BOTH, text, filters.Params("org"))
    assert message in caught.value.message


def test_what_one_type_lacks_is_absent_there() -> None:
    users, groups = filters.compile_filter_across(
        BOTH, 'userName eq "a" or not (members pr)', filters.Params("org")
    )
    assert "user_name" in users and users.endswith("OR ((FALSE) IS NOT TRUE)")
    assert groups.startswith("(FALSE) OR") and "group_members" in groups
    _, groups = filters.compile_filter_across(BOTH, 'title ne "x"', filters.Params("org"))
    assert groups == "TRUE"
    assert filters.sort_expressions_across(BOTH, "userName") == ["lower(r.user_name)", "NULL"]
    with pytest.raises(InvalidArgument, match="nosuch"):
        filters.sort_expressions_across(BOTH, "nosuch")
    with pytest.raises(InvalidArgument, match="members"):
        filters.sort_expressions_across(BOTH, "members")


async def test_search_needs_a_scim_token(channel: grpc.aio.Channel) -> None:
    stub = search_service_pb2_grpc.SearchServiceStub(channel)
    for metadata in ((), ADMIN):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SearchResources(pb.SearchResourcesRequest(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
