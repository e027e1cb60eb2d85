"""Issue #7's targets, and the reference server's figures they compare with.

REFERENCE: what the python-scim reference server (scim2-server 0.8.3, in
memory, uvicorn) does on the same machine class — constants from issue #7's
text, not measured by this suite."""

from __future__ import annotations

REFERENCE_NOTE = "reference figures from issue #7 (scim2-server 0.8.3), same machine class"

# requests per second of scim2-server, by workload name (bench.workloads)
REFERENCE: dict[str, float] = {
    "get-user": 650,
    "filter": 400,
    "post-user": 360,
    "put-user": 270,
    "patch-member": 300,
    "import": 3,  # pages of 100 users per second
}

ROLE_VS_EMPTY_CALL = 0.7  # role lookups ≥ 0.7 x the empty gRPC call
BATCH_VS_EMPTY_CALL = 1.0  # batched role lookups (per lookup) ≥ 1.0 x the empty call
DEACTIVATION_P99_MS = 100.0  # SCIM deactivation's 200 → the other replica says "no role"
SCIM_VS_CHAIN = 0.6  # SCIM reads and writes ≥ 0.6 x their chain ceiling
VS_REFERENCE = 1.5  # every SCIM workload ≥ 1.5 x the reference server
PAGES_VS_REFERENCE = 20.0  # import pages ≥ 20 x the reference server
LAST_PAGE_VS_FIRST = 3.0  # the last import page ≤ 3 x the first
RSS_GROWTH = 1.2  # peak RSS at the large import ≤ 1.2 x at the small one
