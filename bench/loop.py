"""The event loop every benchmark process runs on: the service's own
(common/eventloop.py), so that baselines, load generator and service are
measured on one loop and the ratios mean something."""

from __future__ import annotations

from common import eventloop

SERVICE_LOOP = eventloop.NAME
run = eventloop.run
