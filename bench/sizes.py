"""How big and how long: the default run (issue #7's sizes) and --quick
(small sizes, about a minute, what CI runs)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    users: int  # the main organisation: reads, role lookups, the large import
    small_import_users: int  # the small import, for the peak-RSS comparison
    role_groups: int  # groups mapped to roles; every user is in 3 of them
    patch_groups: int  # empty groups the member-PATCH workload adds to and removes from
    big_group: int  # members of the group replaced by full-list PUT
    replace_repeats: int  # PUTs timed per replace variant
    push_users: int  # first push
    push_groups: int
    seconds: float  # per throughput workload, after warm-up
    warmup_seconds: float
    in_flight: int  # concurrent requests of the load process
    cap_seconds: float  # bound on any one counted workload (import, push, replace)
    peer_import_seconds: float  # the peer's import walk (its pages cost the same anywhere)
    deactivations: int = 200  # deactivation propagations timed


DEFAULT = Sizes(
    users=100_000,
    small_import_users=10_000,
    role_groups=30,
    patch_groups=50,
    big_group=10_000,
    replace_repeats=6,
    push_users=5_000,
    push_groups=200,
    seconds=3.0,
    warmup_seconds=0.5,
    in_flight=16,
    cap_seconds=120.0,
    peer_import_seconds=10.0,
)

QUICK = Sizes(
    users=3_000,
    small_import_users=1_000,
    role_groups=30,
    patch_groups=20,
    big_group=1_000,
    replace_repeats=3,
    push_users=200,
    push_groups=10,
    seconds=0.5,
    warmup_seconds=0.2,
    in_flight=16,
    cap_seconds=60.0,
    peer_import_seconds=2.0,
    deactivations=32,
)


def choose(quick: bool, seconds: float | None) -> Sizes:
    sizes = QUICK if quick else DEFAULT
    return sizes if seconds is None else replace(sizes, seconds=seconds)
