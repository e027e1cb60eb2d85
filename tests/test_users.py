"""Users in the core: SCIM semantics over real gRPC on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import grpc
import pytest

from core import counts
from tests.scim_client import Scim, fails, okta_user, reason
from wando.provisioning.v1 import error_pb2

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


async def test_create_returns_the_full_user_without_password(acme: Scim) -> None:
    body = okta_user("test.user@okta.local", title="Engineer")
    body[ENTERPRISE] = {"department": "Sales", "manager": {"value": "boss-1"}}
    body["schemas"].append(ENTERPRISE)
    user = await acme.create_user(body)
    assert user["id"] and user["userName"] == "test.user@okta.local"
    assert user["name"] == {"givenName": "Test", "familyName": "User"}
    assert user["emails"][0]["value"] == "test.user@okta.local"
    assert user["active"] is True and user["groups"] == []
    assert user[ENTERPRISE]["department"] == "Sales"
    assert set(user["schemas"]) == {"urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE}
    assert user["meta"]["resourceType"] == "User" and user["meta"]["version"] == 'W/"1"'
    assert "password" not in json.dumps(user) and "1mz050nq" not in json.dumps(user)
    assert await acme.get_user(user["id"]) == user


async def test_password_is_never_stored(acme: Scim, pool: asyncpg.Pool) -> None:
    user = await acme.create_user(okta_user("pw@x.example", password="S3cret-Placeholder"))
    await acme.replace_user(user["id"], okta_user("pw@x.example", password="Other-Placeholder"))
    await acme.patch_user(
        user["id"], {"op": "replace", "path": "password", "value": "Third-Placeholder"}
    )
    async with pool.acquire() as conn:
        for table in ("users", "audit_events", "user_emails"):
            dump = await conn.fetchval(f"SELECT coalesce(json_agg(t)::text, '') FROM {table} t")
            assert "Placeholder" not in dump and "password" not in dump.lower(), table


async def test_unknown_extension_attributes_are_kept_as_sent(acme: Scim) -> None:
    urn = "urn:example:params:scim:schemas:extension:acme:2.0:User"
    body = okta_user(
        "ext@x.example", **{urn: {"badge": 42, "Floors": ["3", "4"], "nested": {"a": True}}}
    )
    user = await acme.create_user(body)
    assert user[urn] == {"badge": 42, "Floors": ["3", "4"], "nested": {"a": True}}
    assert urn in user["schemas"]


async def test_duplicate_user_name_is_uniqueness_regardless_of_case(acme: Scim) -> None:
    await acme.create_user(okta_user("Jane.Doe@x.example"))
    error = await fails(
        acme.create_user(okta_user("jane.doe@X.EXAMPLE")), grpc.StatusCode.ALREADY_EXISTS
    )
    assert reason(error) == error_pb2.ERROR_REASON_UNIQUENESS
    assert "jane.doe@X.EXAMPLE" in (error.details() or "")


async def test_concurrent_creates_of_one_user_name_give_one_user(acme: Scim) -> None:
    results = await asyncio.gather(
        *(acme.create_user(okta_user("race@x.example", displayName=f"n{i}")) for i in range(10)),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == 1 and len(refused) == 9
    assert all(e.code() == grpc.StatusCode.ALREADY_EXISTS for e in refused)
    _, total, _ = await acme.list_users(filter='userName eq "race@x.example"')
    assert total == 1


async def test_missing_user_name_is_a_clear_error(acme: Scim) -> None:
    body = okta_user("x@x.example")
    del body["userName"]
    error = await fails(acme.create_user(body), grpc.StatusCode.INVALID_ARGUMENT)
    assert "userName" in (error.details() or "")


async def test_put_replaces_attributes_but_keeps_memberships(acme: Scim) -> None:
    user = await acme.create_user(okta_user("put@x.example", title="Old"))
    group = await acme.create_group({"displayName": "Sales", "members": [{"value": user["id"]}]})
    body = okta_user("put@x.example", name={"givenName": "Another", "familyName": "User"})
    body["id"] = "ignored"
    body["meta"] = {"resourceType": "User", "created": "04-12-2018 00:00:00"}
    replaced = await acme.replace_user(user["id"], body)  # Okta sends groups: []
    assert replaced["name"]["givenName"] == "Another"
    assert "title" not in replaced  # PUT replaces: what is not sent is gone
    assert replaced["id"] == user["id"]
    assert [g["value"] for g in replaced["groups"]] == [group["id"]]
    assert replaced["meta"]["version"] == 'W/"2"'
    assert replaced["meta"]["created"] == user["meta"]["created"]


async def test_deactivate_and_reactivate_by_put_keep_the_user_findable(acme: Scim) -> None:
    user = await acme.create_user(okta_user("leaver@x.example"))
    off = await acme.replace_user(user["id"], okta_user("leaver@x.example", active=False))
    assert off["active"] is False
    assert (await acme.get_user(user["id"]))["active"] is False
    found, total, _ = await acme.list_users(filter='userName eq "LEAVER@x.example"')
    assert total == 1 and found[0]["active"] is False
    on = await acme.replace_user(user["id"], okta_user("leaver@x.example", active=True))
    assert on["active"] is True


async def test_put_without_active_leaves_it_as_it_is(acme: Scim) -> None:
    user = await acme.create_user(okta_user("quiet@x.example", active=False))
    body = okta_user("quiet@x.example")
    del body["active"]
    assert (await acme.replace_user(user["id"], body))["active"] is False


async def test_patch_forms_of_okta_and_entra_deactivate(acme: Scim) -> None:
    user = await acme.create_user(okta_user("p@x.example"))
    out = await acme.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
    assert out["active"] is False and out["emails"] == user["emails"]
    out = await acme.patch_user(user["id"], {"op": "Replace", "path": "active", "value": "True"})
    assert out["active"] is True
    out = await acme.patch_user(user["id"], {"op": "Replace", "path": "active", "value": "False"})
    assert out["active"] is False
    out = await acme.patch_user(
        user["id"],
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@x.example"},
        {"op": "Replace", "path": "name.familyName", "value": "Changed"},
        {"op": "Add", "path": f"{ENTERPRISE}:employeeNumber", "value": "E42"},
    )
    assert out["emails"][0]["value"] == "new@x.example"
    assert out["name"]["familyName"] == "Changed" and out[ENTERPRISE]["employeeNumber"] == "E42"
    found, total, _ = await acme.list_users(filter='emails.value eq "NEW@x.example"')
    assert total == 1 and found[0]["id"] == user["id"]
    _, total, _ = await acme.list_users(filter='emails.value eq "p@x.example"')
    assert total == 0


async def test_email_lookups_follow_a_put_that_keeps_some_addresses(acme: Scim) -> None:
    def emails(*values: str) -> list[dict[str, str]]:
        return [{"value": v, "type": "work"} for v in values]

    user = await acme.create_user(
        okta_user("keep@x.example", emails=emails("a@x.example", "b@x.example"))
    )
    body = okta_user("keep@x.example", emails=emails("B@X.example", "c@x.example"))
    await acme.replace_user(user["id"], body)
    for value, expected in (("a@x.example", 0), ("b@x.example", 1), ("C@x.example", 1)):
        found, total, _ = await acme.list_users(filter=f'emails.value eq "{value}"')
        assert total == expected, value
        assert [u["id"] for u in found] == [user["id"]] * expected
    # an unrelated change leaves the index as it is
    await acme.replace_user(user["id"], {**body, "displayName": "Renamed"})
    _, total, _ = await acme.list_users(filter='emails.value eq "b@x.example"')
    assert total == 1


async def test_concurrent_patches_of_one_user_lose_nothing(acme: Scim, pool: asyncpg.Pool) -> None:
    """Writes that cannot move a role are optimistic (read, then a write that
    checks the version); concurrent ones retry or take the lock, and every one
    lands, once, with its audit event."""
    user = await acme.create_user(okta_user("busy.patches@x.example"))
    writers = 20
    await asyncio.gather(
        *(
            acme.patch_user(
                user["id"],
                {"op": "add", "path": "phoneNumbers", "value": [{"value": f"+1 555 01{i:02}"}]},
            )
            for i in range(writers)
        ),
        # one that does move the role, taking the locked path meanwhile
        acme.patch_user(user["id"], {"op": "replace", "path": "active", "value": False}),
    )
    final = await acme.get_user(user["id"])
    assert sorted(p["value"] for p in final["phoneNumbers"]) == [
        f"+1 555 01{i:02}" for i in range(writers)
    ]
    assert final["active"] is False
    assert final["meta"]["version"] == f'W/"{1 + writers + 1}"'
    async with pool.acquire() as conn:
        patches = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE resource_id = $1 AND action = 'patch'",
            user["id"],
        )
    assert patches == writers + 1


async def test_a_failing_patch_changes_nothing(acme: Scim) -> None:
    user = await acme.create_user(okta_user("atomic@x.example"))
    await fails(
        acme.patch_user(
            user["id"],
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "remove"},  # no path: noTarget
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert await acme.get_user(user["id"]) == user


async def test_versions_and_preconditions(acme: Scim) -> None:
    user = await acme.create_user(okta_user("v@x.example"))
    tag = user["meta"]["version"]
    changed = await acme.patch_user(
        user["id"], {"op": "replace", "path": "title", "value": "A"}, etag=tag
    )
    assert changed["meta"]["version"] != tag
    error = await fails(
        acme.patch_user(user["id"], {"op": "replace", "path": "title", "value": "B"}, etag=tag),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == error_pb2.ERROR_REASON_VERSION_MISMATCH
    await fails(
        acme.replace_user(user["id"], okta_user("v@x.example"), etag=tag),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await fails(acme.delete_user(user["id"], etag=tag), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await acme.get_user(user["id"]))["title"] == "A"
    # a write that changes nothing keeps the version
    same = await acme.patch_user(user["id"], {"op": "replace", "path": "title", "value": "A"})
    assert same["meta"]["version"] == changed["meta"]["version"]
    await acme.delete_user(user["id"], etag=changed["meta"]["version"])


async def test_delete_removes_user_and_memberships(acme: Scim) -> None:
    user = await acme.create_user(okta_user("gone@x.example"))
    group = await acme.create_group({"displayName": "G", "members": [{"value": user["id"]}]})
    await acme.delete_user(user["id"])
    await fails(acme.get_user(user["id"]), grpc.StatusCode.NOT_FOUND)
    await fails(acme.delete_user(user["id"]), grpc.StatusCode.NOT_FOUND)
    assert (await acme.get_group(group["id"]))["members"] == []


async def test_another_organisations_user_is_not_found(acme: Scim, globex: Scim) -> None:
    user = await acme.create_user(okta_user("mine@acme.example"))
    missing = "00000000-0000-0000-0000-000000000000"
    for target in (user["id"], missing, "not-a-uuid"):
        for call in (
            globex.get_user(target),
            globex.replace_user(target, okta_user("mine@acme.example")),
            globex.patch_user(target, {"op": "replace", "path": "title", "value": "x"}),
            globex.delete_user(target),
        ):
            error = await fails(call, grpc.StatusCode.NOT_FOUND)
            assert user["id"] not in (error.details() or "") or target == user["id"]
    _, total, _ = await globex.list_users(filter='userName eq "mine@acme.example"')
    assert total == 0
    # globex may have its own user of the same name
    await globex.create_user(okta_user("mine@acme.example"))
    assert (await acme.get_user(user["id"]))["userName"] == "mine@acme.example"


async def test_paging_edges_and_stable_order(acme: Scim) -> None:
    ids = [(await acme.create_user(okta_user(f"u{i:02d}@x.example")))["id"] for i in range(7)]
    seen = []
    for start in (1, 4, 7):
        page, total, start_index = await acme.list_users(start_index=start, count=3)
        assert total == 7 and start_index == start
        seen += [u["id"] for u in page]
    assert seen == ids  # creation order, nothing twice, nothing missing
    page, total, start_index = await acme.list_users(start_index=0, count=2)
    assert start_index == 1 and [u["id"] for u in page] == ids[:2]
    page, total, _ = await acme.list_users(count=0)
    assert page == [] and total == 7
    page, total, _ = await acme.list_users(start_index=50, count=10)
    assert page == [] and total == 7
    page, _, _ = await acme.list_users(count=-5)
    assert page == []
    page, _, _ = await acme.list_users(count=5000)
    assert len(page) == 7
    page, _, _ = await acme.list_users(sort_by="userName", sort_order=2)
    assert [u["userName"] for u in page] == sorted((u["userName"] for u in page), reverse=True)


async def test_bad_filter_is_invalid_filter(acme: Scim) -> None:
    for bad in ("userName eq", 'nosuch eq "x"', 'userName zz "x"', "((("):
        error = await fails(acme.list_users(filter=bad), grpc.StatusCode.INVALID_ARGUMENT)
        assert reason(error) == error_pb2.ERROR_REASON_INVALID_FILTER, bad
        assert error.details()


async def test_every_write_is_audited_without_values(acme: Scim, pool: asyncpg.Pool) -> None:
    user = await acme.create_user(okta_user("audit@x.example", title="Secret Title"))
    await acme.patch_user(user["id"], {"op": "replace", "path": "title", "value": "Other Secret"})
    await acme.delete_user(user["id"])
    async with pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT action, resource_type, resource_id, changed, token_id "
            "FROM audit_events ORDER BY event_id"
        )
    assert [e["action"] for e in events] == ["create", "patch", "delete"]
    assert all(e["resource_id"] == user["id"] and e["token_id"] for e in events)
    assert events[1]["changed"] == ["title"]
    assert "Secret" not in str([dict(e) for e in events])


async def test_creates_and_deletes_meeting_on_one_count_row_never_deadlock(
    acme: Scim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A creation and a deletion that draw the same count slot (1 in
    counts.SLOTS; here every time) take the slot and the role counter in one
    order (core.roles); the other order deadlocked, and PostgreSQL's victim
    was answered INTERNAL (a 500)."""
    monkeypatch.setattr(counts, "SLOTS", 1)
    for round_ in range(4):
        doomed = await asyncio.gather(
            *(acme.create_user(okta_user(f"d{round_}-{i}@x.example")) for i in range(8))
        )
        await asyncio.gather(
            *(acme.delete_user(u["id"]) for u in doomed),
            *(acme.create_user(okta_user(f"n{round_}-{i}@x.example")) for i in range(8)),
        )
    _, total, _ = await acme.list_users(count=1)
    assert total == 32


async def test_totals_stay_exact_under_concurrent_creates_and_deletes(
    acme: Scim, globex: Scim, pool: asyncpg.Pool
) -> None:
    """totalResults of an unfiltered listing is a kept count (core.counts),
    not a count(*): it must still equal the rows, whatever the interleaving."""
    created = await asyncio.gather(
        *(acme.create_user(okta_user(f"t{i}@x.example")) for i in range(30))
    )
    await globex.create_user(okta_user("t0@x.example"))  # another organisation's
    await asyncio.gather(
        *(acme.delete_user(u["id"]) for u in created[:10]),
        *(acme.create_user(okta_user(f"u{i}@x.example")) for i in range(5)),
    )
    _, total, _ = await acme.list_users(count=1)
    async with pool.acquire() as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM users u JOIN organizations o USING (org_id) WHERE o.slug = 'acme'"
        )
    assert total == rows == 25
    _, filtered, _ = await acme.list_users(filter='userName sw "t"')
    assert filtered == 20
