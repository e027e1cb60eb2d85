"""Auth0's outbound SCIM Action replayed through the real gateway, core and
PostgreSQL (issue #9, user flow): correlation by externalId (the Auth0
user_id), update by PUT or PATCH, block → deactivate, delete, and retries of
the same event being harmless. Roles from the `roles` attribute are not yet
mapped; their entries are kept as sent."""

from __future__ import annotations

from typing import Any

from tests.gateway.support import USER_URN, ScimHttp

AUTH0 = {"User-Agent": None, "Accept-Charset": None}


def auth0_user(user_id: str, email: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": [USER_URN],
        "externalId": user_id,
        "userName": email,
        "emails": [{"value": email, "primary": True}],
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "active": True,
    }
    body.update(extra)
    return body


async def find(scim: ScimHttp, external_id: str) -> list[dict[str, Any]]:
    reply = await scim.get(f'/Users?filter=externalId eq "{external_id}"', headers=AUTH0)
    return reply.assert_list()


async def upsert(scim: ScimHttp, body: dict[str, Any], *, patch: bool = False) -> dict[str, Any]:
    """What the Action does on a user event: look up by externalId, then
    create, or replace (PUT, or PATCH when so configured)."""
    found = await find(scim, body["externalId"])
    if not found:
        reply = await scim.post("/Users", body, headers=AUTH0)
        assert reply.status == 201, reply.text
        return dict(reply.body)
    uid = found[0]["id"]
    if patch:
        values = {k: v for k, v in body.items() if k not in ("schemas", "externalId")}
        reply = await scim.patch(f"/Users/{uid}", {"op": "replace", "value": values}, headers=AUTH0)
    else:
        reply = await scim.put(f"/Users/{uid}", body, headers=AUTH0)
    assert reply.status == 200, reply.text
    return dict(reply.body)


async def test_auth0_user_lifecycle(scim: ScimHttp) -> None:
    auth0_id = "auth0|64f1c2a9e1b2c3d4e5f60718"
    roles = [{"value": "wando-admin", "primary": "True", "type": "auth0"}]
    created = await upsert(scim, auth0_user(auth0_id, "ada@example.com", roles=roles))
    assert created["externalId"] == auth0_id
    assert created["roles"] == [{"value": "wando-admin", "primary": True, "type": "auth0"}]
    # externalId is matched exactly: another case is another Auth0 user
    assert await find(scim, auth0_id.upper()) == []

    # a retried create event finds the user and changes nothing
    again = await upsert(scim, auth0_user(auth0_id, "ada@example.com", roles=roles))
    assert again["id"] == created["id"] and again["meta"]["version"] == created["meta"]["version"]

    # an update, by PUT and by PATCH
    put = await upsert(scim, auth0_user(auth0_id, "ada@example.com", name={"givenName": "Augusta"}))
    assert put["name"] == {"givenName": "Augusta"}
    patched = await upsert(scim, auth0_user(auth0_id, "ada.l@example.com"), patch=True)
    assert patched["userName"] == "ada.l@example.com"

    # blocked in Auth0 → deactivated, still found by externalId; retries harmless
    for _ in range(2):
        blocked = await upsert(scim, auth0_user(auth0_id, "ada.l@example.com", active=False))
        assert blocked["active"] is False
    assert (await find(scim, auth0_id))[0]["active"] is False

    # deleted in Auth0 → deleted; a retried delete is 404, and a later event re-creates
    assert (await scim.delete(f"/Users/{created['id']}", headers=AUTH0)).status == 204
    (await scim.delete(f"/Users/{created['id']}", headers=AUTH0)).assert_error(404)
    assert await find(scim, auth0_id) == []
    recreated = await upsert(scim, auth0_user(auth0_id, "ada.l@example.com"))
    assert recreated["id"] != created["id"]
