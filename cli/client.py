"""The CLI's side of a call to the core: which credential a command sends, and
the one rule for its failures — one line on stderr naming what went wrong (and
which credential, when the core refused it), exit status 1.

Every `wando admin` subcommand is an *action* wrapped by `command` (one answer)
or `streaming` (lines until the stream ends or Ctrl-C). Actions raise CliError
for anything the person at the terminal must fix; gRPC errors become CliError
here, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from common import channels, config, credentials, tls
from wando.provisioning.v1 import admin_service_pb2_grpc, role_service_pb2_grpc

TIMEOUT_SECONDS = 10.0


class CliError(Exception):
    """A one-line failure for the person at the terminal."""


@dataclass(frozen=True)
class Credential:
    """A credential a command sends: its name for people, its variable, its file."""

    name: str
    variable: str
    file: str

    def secret(self, settings: config.Settings) -> str:
        configured = settings.admin_token if self is ADMIN else settings.service_token
        found = credentials.read_credential(configured, settings.data_dir, self.file)
        if not found:
            raise CliError(
                f"no {self.name} credential: set {self.variable}, or run on the machine where "
                f"`wando serve` created {settings.data_dir / self.file}"
            )
        return found


ADMIN = Credential("admin", "WANDO_ADMIN_TOKEN", credentials.ADMIN_TOKEN_FILE)
SERVICE = Credential("service", "WANDO_SERVICE_TOKEN", credentials.SERVICE_TOKEN_FILE)


class Client:
    """A channel to the core and the credential each call carries."""

    def __init__(self, args: argparse.Namespace, credential: Credential) -> None:
        self.settings = config.load(data_dir=args.data_dir, core=args.core)
        self.credential = credential
        secret = credential.secret(self.settings)
        self.metadata = (("authorization", f"Bearer {secret}"),)
        # WANDO_CORE in any of the forms the gateway takes (one address, a list,
        # dns:///), over TLS as WANDO_CORE_TLS_* say
        try:
            self.channel = channels.sync_channel(
                self.settings.core_address, channels.client_tls(self.settings)
            )
        except tls.TLSFilesError as exc:
            raise CliError(f"WANDO_CORE_TLS_*: {exc}") from None
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.roles = role_service_pb2_grpc.RoleServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        """One unary call, e.g. `client.call(stub.GetOrganization, request)`."""
        try:
            return method(request, metadata=self.metadata, timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            raise CliError(self.explain(exc)) from None

    def stream(self, method: Callable[..., Any], request: Message) -> Iterator[Any]:
        """A server stream's messages, until it ends; no deadline."""
        try:
            yield from method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise CliError(self.explain(exc)) from None

    def explain(self, exc: grpc.RpcError) -> str:
        code = exc.code()
        address = self.settings.core_address
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            # gRPC's details tell a refused connection from a failed TLS handshake
            return (
                f"cannot reach the core at {address} ({code.name}: "
                f"{one_line(exc.details() or '')}): is `wando serve` running, and do "
                "WANDO_CORE_TLS_* match its TLS?"
            )
        if code == grpc.StatusCode.UNAUTHENTICATED:
            c = self.credential
            return f"the core refused the {c.name} credential (check {c.variable})"
        return f"{code.name}: {one_line(exc.details() or '')}"

    def close(self) -> None:
        self.channel.close()


def one_line(text: str) -> str:
    return " ".join(text.split())


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


Result = dict[str, Any]  # {"json": what --json prints, "text": what people read}


def command(
    action: Callable[[Client, argparse.Namespace], Result], credential: Credential = ADMIN
) -> Callable[[argparse.Namespace], int]:
    """A handler that runs `action` once and prints its result."""

    def handler(args: argparse.Namespace) -> int:
        def once(client: Client) -> Iterator[Result]:
            yield action(client, args)

        return _print_all(args, credential, once, indent=2)

    return handler


def streaming(
    action: Callable[[Client, argparse.Namespace], Iterator[Result]],
    credential: Credential = ADMIN,
) -> Callable[[argparse.Namespace], int]:
    """A handler that prints each result as the stream yields it (one JSON object
    a line with --json), until the stream ends or Ctrl-C."""

    def handler(args: argparse.Namespace) -> int:
        return _print_all(args, credential, lambda client: action(client, args), indent=None)

    return handler


def _print_all(
    args: argparse.Namespace,
    credential: Credential,
    results: Callable[[Client], Iterator[Result]],
    indent: int | None,
) -> int:
    try:
        client = Client(args, credential)
        try:
            for result in results(client):
                if args.json:
                    print(json.dumps(result["json"], indent=indent), flush=True)
                else:
                    print(result["text"], flush=True)
        finally:
            client.close()
    except CliError as exc:
        print(f"wando: {exc}", file=sys.stderr)
        return 1
    except config.ConfigError as exc:
        print(f"wando: configuration error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


_DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def duration(text: str, units: str, error: str) -> timedelta:
    """A flag's "90d", "12h", "30m" or "45s" (the units among `units`), or
    CliError(error)."""
    found = re.match(rf"^(\d+)([{units}])$", text)
    if not found:
        raise CliError(error)
    return timedelta(**{_DURATION_UNITS[found[2]]: int(found[1])})
