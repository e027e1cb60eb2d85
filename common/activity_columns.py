"""A batch of activity entries as plain columns: RecordActivity's
RecordedColumns (protos/wando/provisioning/v1/activity.proto), field for
field, in Python lists.

What a gateway that hosts the core's services itself (WANDO_CORE=local,
core.local) hands its local core: the same batch as over gRPC, without
building a protobuf message, encoding it and decoding it again in the same
process. core.activity.store reads either form; the field names and meanings
are the message's, so that the two cannot drift apart unnoticed
(tests/gateway/test_activity.py compares them).
"""

from __future__ import annotations

from typing import NamedTuple


class Columns(NamedTuple):
    token_sha256: list[bytes]  # each distinct token's SHA-256
    token: list[int]  # each request's, an index into token_sha256
    user_agents: list[str]  # each distinct User-Agent, truncated
    clients: list[str]  # the client each of user_agents names
    user_agent: list[int]  # each request's, an index into user_agents
    request_time_us: list[int]
    latency_us: list[int]
    request_id: list[str]
    method: list[str]
    route: list[str]
    resource_id: list[str]
    filter: list[str]
    status: list[int]
    scim_type: list[str]
    detail: list[str]
