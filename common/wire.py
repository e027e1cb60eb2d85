"""The wire constants the gateway and the core share, each in one place.

Both tiers import these; a value changed here changes on both sides of the
gRPC hop at once (`tests/test_layout.py` checks nobody spells them again).
"""

from __future__ import annotations

# binary trailer carrying a failed call's wando.provisioning.v1.ErrorInfo
ERROR_INFO_METADATA_KEY = "wando-error-bin"
# call metadata "RATE BURST": the organisations' rate limit the core charges (core.ratelimit)
RATE_LIMIT_METADATA_KEY = "wando-rate-limit"

# SCIM list paging (RFC 7644 §3.4.2.4): a page's size when `count` is not sent,
# and the largest one served (advertised as filter.maxResults)
DEFAULT_COUNT = 100
MAX_COUNT = 1000

# the core schemas' URNs (RFC 7643 §8.7.1)
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
