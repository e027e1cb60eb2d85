"""`attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9) applied to
a resource's SCIM JSON.

Paths are matched without regard to case: `attr`, `attr.sub`, the same with
the core schema URN in front, an extension URN (the whole extension) or an
extension URN followed by `:attr[.sub]`. `id`, `schemas` and `meta` are always
returned. A path naming nothing the resource holds selects nothing.
"""

from __future__ import annotations

from typing import Any

from gateway.query import Projection

ALWAYS = frozenset({"id", "schemas", "meta"})

# a selection tree: lower-cased key → the subtree to keep/drop below it, or
# None for "the whole value"
Tree = dict[str, "Tree | None"]


def project(resource: dict[str, Any], projection: Projection, core_urn: str) -> dict[str, Any]:
    """The resource as the projection asks for it."""
    if not projection.attributes and not projection.excluded_attributes:
        return resource
    out = resource
    if projection.attributes:
        tree = _tree(resource, projection.attributes, core_urn)
        out = {
            key: value if key.lower() in ALWAYS else _keep(value, tree[key.lower()])
            for key, value in resource.items()
            if key.lower() in ALWAYS or key.lower() in tree
        }
        out = {k: v for k, v in out.items() if v is not _DROP}
    if projection.excluded_attributes:
        tree = _tree(out, projection.excluded_attributes, core_urn)
        out = _drop(out, tree, top=True)
    return _sync_schemas(resource, out, core_urn)


_DROP: Any = object()


def _tree(resource: dict[str, Any], paths: tuple[str, ...], core_urn: str) -> Tree:
    extensions = [key.lower() for key in resource if key.lower().startswith("urn:")]
    tree: Tree = {}
    for raw in paths:
        steps = _steps(raw.strip().lower(), core_urn.lower(), extensions)
        if steps:
            _add(tree, steps)
    return tree


def _steps(path: str, core_urn: str, extensions: list[str]) -> list[str]:
    if path.startswith(core_urn + ":"):
        return path[len(core_urn) + 1 :].split(".")
    if path.startswith("urn:"):
        for urn in extensions:
            if path == urn:
                return [urn]
            if path.startswith(urn + ":"):
                return [urn, *path[len(urn) + 1 :].split(".")]
        return []  # an extension this resource does not hold
    return path.split(".")


def _add(tree: Tree, steps: list[str]) -> None:
    head, rest = steps[0], steps[1:]
    if not rest:
        tree[head] = None
        return
    if head in tree and tree[head] is None:
        return  # already whole
    subtree = tree.setdefault(head, {})
    assert subtree is not None
    _add(subtree, rest)


def _keep(value: Any, tree: Tree | None) -> Any:
    """The part of `value` the selection tree names."""
    if tree is None:
        return value
    if isinstance(value, list):
        kept = [_keep(item, tree) for item in value if isinstance(item, dict)]
        kept = [item for item in kept if item is not _DROP]
        return kept or _DROP
    if isinstance(value, dict):
        out = {
            key: _keep(item, tree[key.lower()])
            for key, item in value.items()
            if key.lower() in tree
        }
        out = {key: item for key, item in out.items() if item is not _DROP}
        return out or _DROP
    return _DROP  # a sub-attribute of a simple value: nothing


def _drop(value: Any, tree: Tree, *, top: bool = False) -> Any:
    """`value` without what the selection tree names."""
    if isinstance(value, list):
        items = [_drop(item, tree) if isinstance(item, dict) else item for item in value]
        return [item for item in items if item != {}]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        lowered = key.lower()
        if lowered not in tree or (top and lowered in ALWAYS):
            out[key] = item
            continue
        subtree = tree[lowered]
        if subtree is None:
            continue
        reduced = _drop(item, subtree)
        if reduced != {} and reduced != []:
            out[key] = reduced
    return out


def _sync_schemas(before: dict[str, Any], after: dict[str, Any], core_urn: str) -> dict[str, Any]:
    """Leave out of `schemas` the extensions the projection removed."""
    gone = {
        key.lower() for key in before if key.lower().startswith("urn:") and key not in after
    } - {core_urn.lower()}
    schemas = after.get("schemas")
    if gone and isinstance(schemas, list):
        after = {**after, "schemas": [s for s in schemas if str(s).lower() not in gone]}
    return after
