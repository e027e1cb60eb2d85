"""The layout says it (issue #15, part 5): who may import whom, no import
cycles, and one home for each wire constant the two tiers share.

    cli       the `wando` command: supervisor, workers, admin CLI   (above both)
    core      the gRPC service on PostgreSQL
    gateway   the SCIM HTTP gateway; reaches the core only over gRPC
    common    configuration, logging, JSON, channels, TLS, tracing, wire constants
    wando     the generated protobuf code                            (below all)

Imports needed only for type checking (under `if TYPE_CHECKING:`) are not
run, so they are left out of the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "core", "gateway", "common")
# which of our packages each package may import at run time
ALLOWED = {
    "cli": {"cli", "core", "gateway", "common"},
    "core": {"core", "common"},
    "gateway": {"gateway", "common"},
    "common": {"common"},
}
# the values common/wire.py holds, which no other module of ours may spell
WIRE_VALUES = (
    '"wando-error-bin"',
    '"wando-rate-limit"',
    '"urn:ietf:params:scim:schemas:core:2.0:User"',
    '"urn:ietf:params:scim:schemas:core:2.0:Group"',
)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported outside `if TYPE_CHECKING:` blocks, functions included."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for imported in _runtime_imports(ast.parse(path.read_text())):
            if imported in known and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


@pytest.mark.parametrize("package", PACKAGES)
def test_each_tier_imports_only_what_sits_beside_or_below_it(package: str) -> None:
    wrong = {
        (name, target)
        for name, targets in graph().items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package]
    }
    assert wrong == set()


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_each_shared_wire_value_has_one_home() -> None:
    spelled = {
        (name, value)
        for name, path in modules().items()
        if name != "common.wire"
        for value in WIRE_VALUES
        if value in path.read_text()
    }
    assert spelled == set()


def test_the_checks_see_the_layout() -> None:
    """They would pass on an empty tree; they must not."""
    edges = graph()
    assert "cli.run" in edges and "gateway.app" in edges["cli.run"]
    assert "common.config" in edges["gateway.app"]
    assert all(value in (ROOT / "common" / "wire.py").read_text() for value in WIRE_VALUES)
