"""The targets the suite judges. Every SCIM figure is a ratio to the peer
(bench.peer_process) measured in the same run: no figure from elsewhere."""

from __future__ import annotations

ROLE_VS_EMPTY_CALL = 0.7  # role lookups ≥ 0.7 x the empty gRPC call
VS_PEER = 1.0  # every SCIM workload ≥ 1.0 x the peer (issue #16) …
VS_PEER_GOAL = 1.5  # … and the goal beyond it
PAGES_VS_PEER = 20.0  # import pages ≥ 20 x the peer's
BATCH_VS_EMPTY_CALL = 1.0  # batched role lookups (per lookup) ≥ 1.0 x the empty call
DEACTIVATION_P99_MS = 100.0  # SCIM deactivation's 200 → the other replica says "no role"
LAST_PAGE_VS_FIRST = 3.0  # the last import page ≤ 3 x the first
RSS_GROWTH = 1.2  # peak RSS at the large import ≤ 1.2 x at the small one
