"""Typing shorthands for servicers."""

from __future__ import annotations

from typing import Any

import grpc

# the context of a call on a grpc.aio server
Ctx = grpc.aio.ServicerContext[Any, Any]
