"""The workloads of the suite, by name (the names --only takes): what each
drives, which baseline its ratio is taken against, whether the peer runs it
too, and its targets.

Throughput workloads run `in_flight` concurrent requests for a fixed time;
the counted ones (group replace, import, push) are described in
bench.suite, which runs them."""

from __future__ import annotations

from dataclasses import dataclass

from bench import targets


@dataclass(frozen=True)
class Workload:
    name: str  # for --only and the JSON file
    title: str  # for the table
    job: str  # bench.jobs.JOBS
    target: str  # "bare-grpc", "chain" (baselines), "core" or "gateway" (the service)
    baseline: str | None = None  # name of the workload its ratio is taken against
    min_ratio: float | None = None  # target of that ratio, if any
    peer: bool = False  # the peer runs it too; target ours ÷ peer ≥ targets.VS_PEER
    floor: str | None = None  # a second baseline, shown beside the first (no target)
    # role lookups one request makes: the ratio is of lookups, not of calls
    lookups: int = 1
    # RoleService workloads: the Consistency they ask for
    consistency: str = "minimize_latency"


BASELINES = (
    Workload("empty-rpc", "baseline: empty gRPC call (bare grpc.aio)", "empty_rpc", "bare-grpc"),
    Workload(
        "grpc-read", "baseline: gRPC call + PK SELECT (bare grpc.aio)", "grpc_read", "bare-grpc"
    ),
    Workload("chain-echo", "baseline: aiohttp -> gRPC", "chain_echo", "chain"),
    Workload("chain-write", "baseline: aiohttp -> gRPC + INSERT", "chain_write", "chain"),
    Workload("chain-read", "baseline: aiohttp -> gRPC + PK SELECT", "chain_read", "chain"),
)

THROUGHPUT = (
    Workload(
        "role",
        "GetEffectiveRole (by id), minimize_latency",
        "role",
        "core",
        "empty-rpc",
        targets.ROLE_VS_EMPTY_CALL,
        floor="grpc-read",
    ),
    Workload(
        "role-consistent",
        "GetEffectiveRole (by id), fully_consistent",
        "role",
        "core",
        "empty-rpc",
        floor="grpc-read",
        consistency="fully_consistent",
    ),
    Workload(
        "role-batch",
        "BatchGetEffectiveRoles (100 users a call), minimize_latency",
        "role_batch",
        "core",
        "empty-rpc",
        targets.BATCH_VS_EMPTY_CALL,
        lookups=100,
    ),
    Workload(
        "role-batch-consistent",
        "BatchGetEffectiveRoles (100 users a call), fully_consistent",
        "role_batch",
        "core",
        "empty-rpc",
        lookups=100,
        consistency="fully_consistent",
    ),
    Workload(
        "filter",
        "GET /Users?filter=userName eq",
        "filter_user",
        "gateway",
        "chain-read",
        peer=True,
    ),
    Workload(
        "get-user",
        "GET /Users/{id}",
        "get_user",
        "gateway",
        "chain-read",
        peer=True,
    ),
    Workload(
        "post-user",
        "POST /Users",
        "create_user",
        "gateway",
        "chain-write",
        peer=True,
    ),
    Workload(
        "put-user",
        "PUT /Users/{id}",
        "replace_user",
        "gateway",
        "chain-write",
        peer=True,
    ),
    Workload(
        "patch-member",
        "PATCH /Groups/{id} member add/remove",
        "member_patch",
        "gateway",
        "chain-write",
        peer=True,
    ),
    # the same PATCHes on the 10,000-member group: a membership change should
    # cost what it changes, not the group's size (all on one group's lock)
    Workload(
        "patch-big-member",
        "PATCH member add/remove, 10,000-member group",
        "member_patch",
        "gateway",
        "chain-write",
        peer=True,
    ),
)

COUNTED = ("group-replace", "import", "push", "deactivation")
# the counted workloads the peer runs too (bench.counted)
PEER_COUNTED = ("import", "push")

NAMES = tuple(w.name for w in (*BASELINES, *THROUGHPUT)) + COUNTED
