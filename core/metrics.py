"""The Prometheus endpoint (/metrics) on WANDO_METRICS_LISTEN."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from core.config import HostPort

log = logging.getLogger(__name__)


def serve_metrics(listen: HostPort | None) -> None:
    if listen is None:
        return
    try:
        start_http_server(listen.port, addr=listen.host)
    except OSError as exc:
        log.warning("metrics endpoint not started on %s: %s", listen, exc)
        return
    log.info("metrics on http://%s/metrics", listen)
