"""Liveness and readiness for load balancers and orchestrators, outside the
SCIM prefix; no token, and nothing about any organisation in the answer.

- GET /healthz: 200 while the process serves HTTP at all.
- GET /readyz: 200 when the core answers the standard gRPC health check
  SERVING within READY_DEADLINE_SECONDS; 503 otherwise, and from the moment
  the process starts draining (SIGTERM), so a balancer stops sending it work.
  A core that is starting (still applying migrations) is not serving yet.
"""

from __future__ import annotations

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2

from gateway.keys import CORE, LIFECYCLE

READY_DEADLINE_SECONDS = 1.0
TEXT = "text/plain"


class Lifecycle:
    """What /readyz knows of the process itself."""

    def __init__(self) -> None:
        self.draining = False


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", content_type=TEXT)


async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].draining:
        return _not_ready("draining")
    core = request.app.get(CORE)
    if core is None:
        return _not_ready("starting")
    check = health_check(core.channel)  # the current channel (a new one after a TLS rotation)
    try:
        answer = await check(
            health_pb2.HealthCheckRequest(service=""), timeout=READY_DEADLINE_SECONDS
        )
    except grpc.aio.AioRpcError as exc:
        return _not_ready(f"the core did not answer ({exc.code().name})")
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        return _not_ready("the core is not serving")
    return web.Response(text="ready\n", content_type=TEXT)


def _not_ready(why: str) -> web.Response:
    return web.Response(
        status=503, text=f"not ready: {why}\n", content_type=TEXT, headers={"Retry-After": "1"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


HealthCheck = grpc.aio.UnaryUnaryMultiCallable[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]


def health_check(channel: grpc.aio.Channel) -> HealthCheck:
    """The core's grpc.health.v1.Health/Check on `channel`."""
    return channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
