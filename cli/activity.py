"""`wando admin activity`: the SCIM requests an organisation's tokens made, one
line each, oldest of the page first so that --follow continues at the bottom."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cli.client import ADMIN, Client, CliError, Result, duration, streaming
from cli.client import as_dict as _dict
from wando.provisioning.v1 import admin_service_pb2 as pb


def add_commands(topics: Any) -> None:
    text = "an organisation's SCIM requests (activity), one line each"
    cmd = topics.add_parser("activity", help=text, description=text)
    cmd.add_argument("--org", required=True, help="organisation id or slug")
    cmd.add_argument("--errors", action="store_true", help="only failed requests (4xx, 5xx)")
    cmd.add_argument("--since", help="only requests this recent: 30s, 15m, 1h, 7d")
    cmd.add_argument("--user", default="", help="only requests about this user: id or userName")
    cmd.add_argument("--status", type=int, default=0, help="only this HTTP status")
    cmd.add_argument("--client", default="", choices=["", "okta", "entra", "auth0", "other"])
    cmd.add_argument("--limit", type=int, default=50, help="how many requests (default 50)")
    cmd.add_argument("--follow", action="store_true", help="keep printing new requests")
    cmd.set_defaults(handler=streaming(activity, ADMIN))


def since(text: str | None) -> Timestamp | None:
    if not text:
        return None
    back = duration(text, "dhms", f"--since must look like 30s, 15m, 1h or 7d, got {text!r}")
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) - back)
    return ts


def line(e: Any) -> str:
    """`12:03:04 okta PATCH /Groups/{id} 7f3… 400 invalidValue "detail"` (UTC; the
    month and day too before today)."""
    at = e.request_time.ToDatetime(tzinfo=UTC)
    when = at.strftime("%H:%M:%S" if at.date() == datetime.now(UTC).date() else "%m-%d %H:%M:%S")
    parts = [when, e.client, e.method, e.route or "(no route)"]
    if e.resource_id:
        parts.append(e.resource_id[:3] + "…" if len(e.resource_id) > 8 else e.resource_id)
    parts.append(str(e.status))
    if e.scim_type:
        parts.append(e.scim_type)
    if e.detail:
        parts.append(f'"{e.detail}"')
    if e.filter:
        parts.append(f"filter: {e.filter}")
    parts.append(f"({e.latency.ToMilliseconds()} ms)")
    return " ".join(parts)


def activity(client: Client, args: argparse.Namespace) -> Iterator[Result]:
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    wanted = pb.ActivityFilter(
        errors_only=args.errors, status=args.status, user=args.user, client=args.client
    )
    start = since(args.since)
    found: list[Any] = []
    token = ""
    watch_after = 0
    while len(found) < args.limit:
        request = pb.ListActivityRequest(
            organization=args.org,
            start_time=start,
            filter=wanted,
            page_size=min(args.limit - len(found), 1000),
            page_token=token,
        )
        page = client.call(client.admin.ListActivity, request)
        watch_after = watch_after or page.watch_after
        found.extend(page.entries)
        token = page.next_page_token
        if not token:
            break
    for e in reversed(found):
        yield {"json": _dict(e), "text": line(e)}
    if not found and not args.follow and not args.json:  # --json: JSON Lines, so none
        yield {"json": None, "text": "no activity"}
    if not args.follow:
        return
    # from where the listing's first page stood: nothing stored since is missed;
    # what a later page listed too is skipped
    shown = {e.id for e in found}
    watch = pb.WatchActivityRequest(organization=args.org, filter=wanted, after=watch_after)
    if not watch_after and found:  # a core that does not say where its listing stood
        watch.start_time.CopyFrom(found[0].request_time)
    for response in client.stream(client.admin.WatchActivity, watch):
        if response.entry.id not in shown:
            yield {"json": _dict(response.entry), "text": line(response.entry)}
