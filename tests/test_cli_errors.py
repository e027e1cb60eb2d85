"""Every `wando admin` subcommand fails the same way (issue #18, part 4): one
line on stderr, nothing on stdout, exit status 1, and the credential it needs
named — with no credential, against an unreachable core, and with a credential
the core refuses."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from cli.main import build_parser, main
from core.server import CoreServer
from tests.support import ADMIN_TOKEN, SERVICE_TOKEN, free_port, run_wando

ORG = ["--org", "acme"]
# one invocation of every subcommand, and the credential it sends
COMMANDS: dict[str, tuple[list[str], str]] = {
    "org create": (["acme"], "admin"),
    "org show": (["acme"], "admin"),
    "org list": ([], "admin"),
    "org status": (["acme"], "admin"),
    "token issue": (ORG, "admin"),
    "token list": (ORG, "admin"),
    "token revoke": ([*ORG, "00000000-0000-0000-0000-000000000000"], "admin"),
    "audit": (ORG, "admin"),
    "roles map": ([*ORG, "--group", "Admins", "--role", "admin"], "admin"),
    "roles unmap": ([*ORG, "--value", "wando-admin"], "admin"),
    "roles list": (ORG, "admin"),
    "roles default": ([*ORG, "--role", "member"], "admin"),
    "roles preview": ([*ORG, "--group", "Admins", "--role", "boss"], "admin"),
    "roles show": ([*ORG, "--user", "alice@example.com"], "service"),
    "roles watch": (ORG, "service"),
    "activity": ([*ORG, "--follow"], "admin"),
}
VARIABLE = {"admin": "WANDO_ADMIN_TOKEN", "service": "WANDO_SERVICE_TOKEN"}


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every runnable `wando admin …` subcommand, by walking the parser."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= subcommands(sub, f"{prefix} {name}".strip())
    if not found and prefix:
        found.add(prefix)
    return found


def argv(name: str) -> list[str]:
    return ["admin", *name.split(), *COMMANDS[name][0]]


def test_the_table_names_every_subcommand() -> None:
    admin = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["admin"]
    assert subcommands(admin) == set(COMMANDS)


@pytest.fixture
def nothing_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WANDO_ADMIN_TOKEN", "WANDO_SERVICE_TOKEN", "WANDO_CORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDO_DATA_DIR", str(tmp_path))  # holds no credential files
    monkeypatch.setenv("WANDO_CORE", f"127.0.0.1:{free_port()}")


def one_error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("wando: "), err
    return err.strip()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_credential(
    name: str, nothing_configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    credential = COMMANDS[name][1]
    line = one_error_line(capsys, main(argv(name)))
    assert line.startswith(f"wando: no {credential} credential: set {VARIABLE[credential]}")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unreachable_core(
    name: str,
    nothing_configured: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WANDO_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("WANDO_SERVICE_TOKEN", SERVICE_TOKEN)
    line = one_error_line(capsys, main(argv(name)))
    assert "cannot reach the core at 127.0.0.1:" in line


async def test_a_refused_credential_is_named(
    core: CoreServer,
    nothing_configured: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WANDO_CORE", f"127.0.0.1:{core.port}")
    # each credential where the other belongs: the core refuses both
    monkeypatch.setenv("WANDO_ADMIN_TOKEN", SERVICE_TOKEN)
    monkeypatch.setenv("WANDO_SERVICE_TOKEN", ADMIN_TOKEN)
    for name in sorted(COMMANDS):
        credential = COMMANDS[name][1]
        code = await asyncio.to_thread(main, argv(name))
        line = one_error_line(capsys, code)
        assert line == (
            f"wando: the core refused the {credential} credential (check {VARIABLE[credential]})"
        ), name


async def test_roles_watch_without_credential_is_no_traceback(tmp_path: Path) -> None:
    """The installed command, as a person runs it."""
    env = {
        "WANDO_DATA_DIR": str(tmp_path),
        "WANDO_ADMIN_TOKEN": "",
        "WANDO_SERVICE_TOKEN": "",
        "WANDO_CORE": f"127.0.0.1:{free_port()}",
    }
    code, out, err = await run_wando("admin", "roles", "watch", "--org", "acme", env=env)
    assert (code, out) == (1, "")
    assert err.startswith("wando: no service credential: set WANDO_SERVICE_TOKEN")
    assert err.count("\n") == 1
    env["WANDO_SERVICE_TOKEN"] = SERVICE_TOKEN
    code, out, err = await run_wando("admin", "roles", "watch", "--org", "acme", env=env)
    assert (code, out) == (1, "")
    assert "cannot reach the core" in err and err.count("\n") == 1
