"""Issue #17 item 1: POST /.search at the SCIM root (RFC 7644 §3.4.3) finds
users and groups of the token's organisation together, with filter,
attributes, excludedAttributes, sortBy, sortOrder, startIndex and count."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.support import BASE, ENTERPRISE_URN, GROUP_URN, USER_URN, ScimHttp, okta_user

# each test that reaches the core through the gateway, over gRPC and in-process
GATEWAY_CORES = ("grpc", "local")

SEARCH_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


async def search(scim: ScimHttp, **request: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    reply = await scim.post("/.search", {"schemas": [SEARCH_URN], **request})
    return reply.assert_list(), reply.body


def names(resources: list[dict[str, Any]]) -> list[str]:
    return [r.get("userName") or r.get("displayName") or r["id"] for r in resources]


@pytest.fixture
async def world(scim: ScimHttp, other: ScimHttp) -> dict[str, dict[str, Any]]:
    """In creation order: user ada, group Admins (ada), user bob, group Staff
    (bob), user cy; and a stranger organisation's user and group."""
    made: dict[str, dict[str, Any]] = {}

    async def user(name: str, **extra: Any) -> None:
        reply = await scim.post("/Users", okta_user(f"{name}@initech.example", **extra))
        assert reply.status == 201, reply.text
        made[name] = reply.body

    async def group(name: str, *members: str) -> None:
        body = {"displayName": name, "members": [{"value": made[m]["id"]} for m in members]}
        reply = await scim.post("/Groups", body)
        assert reply.status == 201, reply.text
        made[name] = reply.body

    await user("ada", displayName="Ada", title="Countess")
    await group("Admins", "ada")
    await user("bob", displayName="Bob", **{ENTERPRISE_URN: {"department": "Ops"}})
    await group("Staff", "bob")
    await user("cy", displayName="Cy")
    stranger = await other.post("/Users", okta_user("ada@umbrella.example", displayName="Ada"))
    assert stranger.status == 201
    assert (await other.post("/Groups", {"displayName": "Admins"})).status == 201
    return made


ALL = [
    "ada@initech.example",
    "Admins",
    "bob@initech.example",
    "Staff",
    "cy@initech.example",
]


async def test_everything_in_creation_order_rendered_as_its_own_endpoint(
    scim: ScimHttp, world: dict[str, dict[str, Any]]
) -> None:
    found, body = await search(scim)
    assert names(found) == ALL and body["totalResults"] == 5 and body["startIndex"] == 1
    by_name = dict(zip(names(found), found, strict=True))
    for made in world.values():
        key = made.get("userName") or made["displayName"]
        assert by_name[key] == (await scim.get(made["meta"]["location"][len(BASE) :])).body
    assert by_name["Admins"]["schemas"] == [GROUP_URN]
    assert by_name["Admins"]["members"][0]["$ref"] == f"{BASE}/Users/{world['ada']['id']}"
    assert by_name["ada@initech.example"]["groups"][0]["display"] == "Admins"
    assert by_name["cy@initech.example"]["meta"]["resourceType"] == "User"
    # a trailing slash in the base URL, and descending creation order
    reply = await scim.post("//.search", {"sortOrder": "descending"})
    assert names(reply.assert_list()) == ALL[::-1]


@pytest.mark.parametrize(
    ("scim_filter", "expected"),
    [
        ('displayName sw "a"', ["ada@initech.example", "Admins"]),
        ('userName eq "ADA@initech.example"', ["ada@initech.example"]),
        ('meta.resourceType eq "Group"', ["Admins", "Staff"]),
        ('meta.resourceType eq "User" and displayName co "y"', ["cy@initech.example"]),
        ("title pr", ["ada@initech.example"]),
        ('urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq "staff"', ["Staff"]),
        (f'{ENTERPRISE_URN}:department eq "ops"', ["bob@initech.example"]),
        ('emails[value ew "cy@initech.example"]', ["cy@initech.example"]),
        ('emails[value ew "cy@initech.example"] or displayName eq "Staff"', ALL[3:]),
        # an attribute a type does not have is absent on it: `ne` and `not` hold
        ('userName ne "ada@initech.example"', ALL[1:]),
        ("not (userName pr)", ["Admins", "Staff"]),
        ("not (members pr)", ["ada@initech.example", "bob@initech.example", "cy@initech.example"]),
        (
            'displayName gt "B" and displayName lt "S"',
            ["bob@initech.example", "cy@initech.example"],
        ),
    ],
)
async def test_a_filter_applies_to_both_types(
    scim: ScimHttp, world: dict[str, dict[str, Any]], scim_filter: str, expected: list[str]
) -> None:
    found, body = await search(scim, filter=scim_filter)
    assert names(found) == expected
    assert body["totalResults"] == len(expected)


async def test_filters_on_memberships(scim: ScimHttp, world: dict[str, dict[str, Any]]) -> None:
    found, _ = await search(scim, filter=f'members.value eq "{world["ada"]["id"]}"')
    assert names(found) == ["Admins"]
    found, _ = await search(scim, filter=f'groups.value eq "{world["Staff"]["id"]}"')
    assert names(found) == ["bob@initech.example"]
    found, _ = await search(scim, filter=f'id eq "{world["Staff"]["id"]}"')
    assert names(found) == ["Staff"]


async def test_sorting_over_the_union(scim: ScimHttp, world: dict[str, dict[str, Any]]) -> None:
    found, _ = await search(scim, sortBy="displayName")
    assert names(found) == [
        "ada@initech.example",  # Ada
        "Admins",
        "bob@initech.example",  # Bob
        "cy@initech.example",  # Cy
        "Staff",
    ]
    found, _ = await search(scim, sortBy="displayName", sortOrder="descending")
    assert names(found) == [
        "Staff",
        "cy@initech.example",
        "bob@initech.example",
        "Admins",
        "ada@initech.example",
    ]
    # groups have no userName: after every user, in creation order, either way
    found, _ = await search(scim, sortBy="userName", sortOrder="descending")
    assert names(found) == [
        "cy@initech.example",
        "bob@initech.example",
        "ada@initech.example",
        "Admins",
        "Staff",
    ]
    found, _ = await search(scim, sortBy="meta.resourceType", filter='displayName lt "C"')
    assert names(found) == ["Admins", "ada@initech.example", "bob@initech.example"]


async def test_paging_walks_the_union_once(
    scim: ScimHttp, world: dict[str, dict[str, Any]]
) -> None:
    for sort in ({}, {"sortBy": "displayName"}, {"sortBy": "userName"}):
        whole, _ = await search(scim, **sort)
        walked: list[str] = []
        for start in (1, 3, 5):
            page, body = await search(scim, startIndex=start, count=2, **sort)
            assert body["totalResults"] == 5 and body["startIndex"] == start
            walked += names(page)
        assert walked == names(whole), sort
    page, body = await search(scim, startIndex=6, count=2)
    assert page == [] and body["totalResults"] == 5
    page, body = await search(scim, count=0, filter='meta.resourceType eq "Group"')
    assert page == [] and body["totalResults"] == 2
    page, body = await search(scim, startIndex=-3, count=1)
    assert names(page) == ALL[:1] and body["startIndex"] == 1


async def test_projection_applies_to_each_type(
    scim: ScimHttp, world: dict[str, dict[str, Any]]
) -> None:
    found, _ = await search(scim, attributes=["displayName"])
    assert [set(r) for r in found] == [{"schemas", "id", "meta", "displayName"}] * 5
    found, _ = await search(scim, excludedAttributes=["members", "groups", "emails"])
    assert not any({"members", "groups", "emails"} & set(r) for r in found)
    found, _ = await search(
        scim, filter='meta.resourceType eq "Group"', attributes=["members.value", "userName"]
    )
    assert [r["members"] for r in found] == [
        [{"value": world["ada"]["id"]}],
        [{"value": world["bob"]["id"]}],
    ]
    found, _ = await search(scim, attributes=[f"{USER_URN}:userName"], count=1)
    assert found[0]["userName"] == "ada@initech.example" and "displayName" not in found[0]


@pytest.mark.parametrize(
    ("request_body", "status", "scim_type", "mention"),
    [
        ({"filter": 'nosuch eq "x"'}, 400, "invalidFilter", "nosuch"),
        ({"filter": "name.nosuch pr"}, 400, "invalidFilter", "nosuch"),
        ({"filter": 'userName eq "x'}, 400, "invalidFilter", "invalid filter"),
        ({"filter": "active eq 1"}, 400, "invalidFilter", "active"),
        ({"filter": "members.$ref pr"}, 400, "invalidFilter", "$ref"),
        ({"sortBy": "nosuch"}, 400, "invalidValue", "nosuch"),
        ({"sortBy": "members"}, 400, "invalidValue", "members"),
        ({"sortBy": "groups"}, 400, "invalidValue", "groups"),
        ({"sortOrder": "sideways"}, 400, "invalidValue", "sortOrder"),
        ({"startIndex": "one"}, 400, "invalidValue", "startIndex"),
        ({"schemas": ["urn:nope"]}, 400, "invalidSyntax", "SearchRequest"),
        ({"attributes": [f"x{n}" for n in range(101)]}, 400, "tooMany", "attributes"),
    ],
)
async def test_bad_searches_get_clear_errors(
    scim: ScimHttp,
    world: dict[str, dict[str, Any]],
    request_body: dict[str, Any],
    status: int,
    scim_type: str,
    mention: str,
) -> None:
    reply = await scim.post("/.search", request_body)
    assert mention in reply.assert_error(status, scim_type)


async def test_root_search_needs_a_token_and_post(
    scim: ScimHttp, other: ScimHttp, anonymous: ScimHttp, world: dict[str, dict[str, Any]]
) -> None:
    (await anonymous.post("/.search", {})).assert_error(401)
    (await scim.get("/.search")).assert_error(405)
    not_json = await scim.request("POST", "/.search", data=b"[1]")
    not_json.assert_error(400, "invalidSyntax")
    theirs, body = await search(other)
    assert names(theirs) == ["ada@umbrella.example", "Admins"] and body["totalResults"] == 2
    ours = {r["id"] for r in (await search(scim))[0]}
    assert not ours & {r["id"] for r in theirs}
    # another organisation's id matches nothing
    found, _ = await search(other, filter=f'id eq "{world["Admins"]["id"]}"')
    assert found == []
