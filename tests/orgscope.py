"""Is every statement scoped to one organisation? PostgreSQL's own parser decides.

docs/scale-out.md promises that the database can be distributed by `org_id`
(Citus) without a rewrite. That holds only while every statement that reads or
writes a distributed table pins that table's `org_id`, so that it can be routed
to one node. This module checks one statement's text, with pglast (the real
PostgreSQL parser, libpg_query), by these rules:

- every reference to a distributed table, in every SELECT, UPDATE, DELETE and
  INSERT … SELECT scope, has its `org_id` equal to an *anchor*: a parameter, a
  constant, or a column from outside the scope (an outer query's, a CTE's, a
  subquery's, all of which are checked where they are defined), directly or
  through other columns (`g.org_id = m.org_id AND m.org_id = $1`), in the WHERE
  clause's conjuncts, a JOIN's ON or USING;
- a subquery's output column pinned by the outer query pins the column each
  of its branches gives there (`SELECT * FROM (SELECT r.org_id … FROM users r
  UNION ALL SELECT r.org_id … FROM groups r) h WHERE h.org_id = $1`): the
  planner pushes such a condition into every branch;
- `org_id = ANY(…)` or `IN (…)` is not one organisation, so it is no anchor;
- an INSERT into a distributed table names `org_id` among its columns;
- reference tables (small, replicated to every node) and CTE names need no
  constraint; a table the classification does not know is a finding, so a new
  table cannot be added without deciding where it lives.

`TABLES` is the one classification; tests/test_org_scoping.py checks that
docs/scale-out.md says the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType

DISTRIBUTED = "distributed by org_id"
REFERENCE = "reference table"
LOCAL = "local to each node"

# every table (and view) the core's statements name, with where it lives
TABLES: dict[str, str] = {
    "organizations": REFERENCE,
    "scim_tokens": REFERENCE,
    "schema_migrations": LOCAL,
    "users": DISTRIBUTED,
    "user_emails": DISTRIBUTED,
    "user_role_values": DISTRIBUTED,
    "groups": DISTRIBUTED,
    "group_members": DISTRIBUTED,
    "group_roles": DISTRIBUTED,
    "role_value_mappings": DISTRIBUTED,
    "audit_events": DISTRIBUTED,
    "role_changes": DISTRIBUTED,
    "role_counters": DISTRIBUTED,
    "resource_counts": DISTRIBUTED,
    "rate_limits": DISTRIBUTED,
    "activity": DISTRIBUTED,
    "activity_chunks": DISTRIBUTED,
    "activity_counts": DISTRIBUTED,
    # views over distributed tables, colocated: a statement pins them as a table
    "user_grants": DISTRIBUTED,
    "effective_roles": DISTRIBUTED,
}

# statements the core sends on purpose across several organisations, each
# named by a fragment of its text, with the reason it may (under Citus each
# is one multi-shard statement, which is correct, only not single-node)
EXCEPTIONS: dict[str, str] = {
    "FROM role_counters WHERE org_id = ANY(": (
        "the role cache's polling backstop (core/role_cache.py SELECT_COUNTERS): one read "
        "of the counters of the organisations this replica caches, every poll interval, "
        "instead of one statement per organisation"
    ),
}

# relations every PostgreSQL has; statements may read them freely
CATALOG_PREFIXES = ("pg_", "information_schema")


@dataclass(frozen=True)
class Finding:
    sql: str
    problem: str

    def __str__(self) -> str:
        one_line = " ".join(self.sql.split())
        return f"{self.problem}: {one_line[:240]}"


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, key: Any) -> Any:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)


ANCHOR = ("<anchor>",)


@dataclass
class _Scope:
    """One SELECT, UPDATE or DELETE: the tables it reads directly, by alias."""

    ctes: set[str]
    tables: dict[str, str] = field(default_factory=dict)  # alias -> table name
    subqueries: list[tuple[str, Any]] = field(default_factory=list)  # (alias, SelectStmt)
    quals: list[Any] = field(default_factory=list)
    using: list[tuple[list[str], list[str], list[str]]] = field(default_factory=list)


def check(sql: str) -> list[Finding]:
    """What in `sql` is not scoped to one organisation (empty: all is, or it
    is one of the EXCEPTIONS)."""
    if any(fragment in sql for fragment in EXCEPTIONS):
        return []
    try:
        statements = parse_sql(sql)
    except Exception as exc:  # pglast.parser.ParseError: not ours to judge
        return [Finding(sql, f"cannot parse: {exc}")]
    ctes = {cte.ctename for cte in _walk(statements) if isinstance(cte, ast.CommonTableExpr)}
    problems: list[str] = []
    pins: dict[int, list[tuple[str, ...]]] = {}  # id(branch) -> its columns pinned from outside
    for node in _walk(statements):
        if isinstance(node, ast.RangeVar):
            name = node.relname
            if name not in ctes and name not in TABLES and not name.startswith(CATALOG_PREFIXES):
                problems.append(f"table {name!r} is not classified in tests/orgscope.py TABLES")
        if isinstance(node, ast.InsertStmt):
            problems.extend(_check_insert(node))
        if isinstance(node, ast.SelectStmt | ast.UpdateStmt | ast.DeleteStmt):
            problems.extend(_check_scope(node, ctes, pins))
    return [Finding(sql, p) for p in dict.fromkeys(problems)]


def _check_insert(node: ast.InsertStmt) -> list[str]:
    table = node.relation.relname
    if TABLES.get(table) != DISTRIBUTED:
        return []
    columns = [c.name for c in node.cols or ()]
    if "org_id" not in columns:
        return [f"INSERT INTO {table} does not name org_id"]
    return []


def _check_scope(node: Any, ctes: set[str], pins: dict[int, list[tuple[str, ...]]]) -> list[str]:
    """The scope's distributed tables whose org_id nothing pins; records in
    `pins` what it pins of its subqueries' branches (walked after it)."""
    scope = _Scope(ctes)
    if isinstance(node, ast.SelectStmt):
        for item in node.fromClause or ():
            _collect_from(item, scope)
        _add_qual(scope, node.whereClause)
    elif isinstance(node, ast.UpdateStmt):
        _collect_from(node.relation, scope)
        for item in node.fromClause or ():
            _collect_from(item, scope)
        _add_qual(scope, node.whereClause)
    else:
        _collect_from(node.relation, scope)
        for item in node.usingClause or ():
            _collect_from(item, scope)
        _add_qual(scope, node.whereClause)
    distributed = {
        alias: table
        for alias, table in scope.tables.items()
        if table not in ctes and TABLES.get(table) == DISTRIBUTED
    }
    if not distributed and not scope.subqueries:
        return []
    classes = _UnionFind()
    for key in pins.get(id(node), ()):
        classes.union(key, ANCHOR)
    for qual in scope.quals:
        for left, right in _equalities(qual):
            a, b = _key(left, scope), _key(right, scope)
            if a is not None and b is not None:
                classes.union(a, b)
    for names, left_aliases, right_aliases in scope.using:
        if "org_id" in names:
            for a in left_aliases + right_aliases:
                classes.union((a, "org_id"), (left_aliases[0], "org_id"))
    anchor = classes.find(ANCHOR)
    # first, what this scope pins of its subqueries' output by its own values
    for alias, subquery in scope.subqueries:
        branches = list(_branches(subquery))
        names = _output_names(branches[0])
        for position, name in enumerate(names):
            if name is None or classes.find((alias, name)) != anchor:
                continue
            for branch in branches:
                targets = branch.targetList or ()
                if position < len(targets):
                    inner = _key(targets[position].val, _branch_scope(branch, ctes))
                    if inner is not None and inner != ANCHOR:
                        pins.setdefault(id(branch), []).append(inner)
    # then a subquery's columns are anchors for this scope's tables: whether
    # the subquery pins them is checked where it is defined
    derived = {alias for alias, _ in scope.subqueries}
    for key in list(classes.parent):
        if key != ANCHOR and key[0] in derived:
            classes.union(key, ANCHOR)
    anchor = classes.find(ANCHOR)
    return [
        f"{table} ({alias}) is read or written without pinning its org_id"
        for alias, table in distributed.items()
        if classes.find((alias, "org_id")) != anchor
    ]


def _collect_from(item: Any, scope: _Scope) -> list[str]:
    """Record the tables `item` brings into the scope; returns their aliases."""
    if isinstance(item, ast.RangeVar):
        alias = item.alias.aliasname if item.alias else item.relname
        scope.tables[alias] = item.relname
        return [alias]
    if isinstance(item, ast.JoinExpr):
        left = _collect_from(item.larg, scope)
        right = _collect_from(item.rarg, scope)
        _add_qual(scope, item.quals)
        if item.usingClause and left and right:
            scope.using.append(([s.sval for s in item.usingClause], left, right))
        return left + right
    if isinstance(item, ast.RangeSubselect) and item.alias:
        # a derived relation: checked where defined, perhaps pinned from here
        scope.subqueries.append((item.alias.aliasname, item.subquery))
        return []
    return []  # a function's rows (unnest, jsonb_array_elements): pin nothing


def _branches(select: Any) -> Iterator[Any]:
    """The SELECTs of a UNION / INTERSECT / EXCEPT, or the one SELECT."""
    if isinstance(select, ast.SelectStmt) and select.larg is not None:
        yield from _branches(select.larg)
        yield from _branches(select.rarg)
    elif isinstance(select, ast.SelectStmt):
        yield select


def _output_names(select: Any) -> list[str | None]:
    names: list[str | None] = []
    for target in select.targetList or ():
        if target.name:
            names.append(target.name)
        elif isinstance(target.val, ast.ColumnRef) and isinstance(
            target.val.fields[-1], ast.String
        ):
            names.append(target.val.fields[-1].sval)
        else:
            names.append(None)
    return names


def _branch_scope(select: Any, ctes: set[str]) -> _Scope:
    scope = _Scope(ctes)
    for item in select.fromClause or ():
        _collect_from(item, scope)
    return scope


def _add_qual(scope: _Scope, qual: Any) -> None:
    if qual is not None:
        scope.quals.append(qual)


def _equalities(qual: Any) -> Iterator[tuple[Any, Any]]:
    """The `a = b` pairs that must all hold for `qual` to hold."""
    if isinstance(qual, ast.BoolExpr) and qual.boolop == BoolExprType.AND_EXPR:
        for arg in qual.args:
            yield from _equalities(arg)
    elif (
        isinstance(qual, ast.A_Expr)
        and qual.kind == A_Expr_Kind.AEXPR_OP
        and [n.sval for n in qual.name] == ["="]
    ):
        left, right = qual.lexpr, qual.rexpr
        if isinstance(left, ast.RowExpr) and isinstance(right, ast.RowExpr):
            yield from zip(left.args, right.args, strict=False)
        else:
            yield left, right


def _key(expr: Any, scope: _Scope) -> tuple[str, ...] | None:
    """A column of the scope as (alias, column); ANCHOR for a value the scope
    does not choose; None for an expression that pins nothing."""
    while isinstance(expr, ast.TypeCast):
        expr = expr.arg
    if isinstance(expr, ast.ParamRef | ast.A_Const):
        return ANCHOR
    if isinstance(expr, ast.ColumnRef):
        names = [f.sval for f in expr.fields if isinstance(f, ast.String)]
        if len(names) == 1:
            owners = list(scope.tables)
            if len(owners) != 1:
                return None  # ambiguous without an alias: pins nothing we can see
            names = [owners[0], names[0]]
        alias, column = names[-2], names[-1]
        if alias in scope.tables and scope.tables[alias] not in scope.ctes:
            return (alias, column)
        if any(alias == sub for sub, _ in scope.subqueries):
            return (alias, column)  # a subquery's column: see _check_scope
        return ANCHOR  # an outer query's, a CTE's or a subquery's column
    if isinstance(expr, ast.SubLink):
        return ANCHOR  # a scalar subquery: one value, checked as its own scope
    return None


def _walk(node: Any) -> Iterator[Any]:
    """Every AST node under `node`, itself included."""
    if isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)
        return
    if isinstance(node, ast.RawStmt):
        yield from _walk(node.stmt)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    if isinstance(node, ast.LockingClause):
        return  # FOR UPDATE OF <alias>: names, not tables
    for name in node:
        yield from _walk(getattr(node, name))
