"""Static checks of a parsed expression against the columns a file really has.

This runs before any data is read, so a wrong query fails on the catalogue of
branch names and types alone: an unknown name, a reduction of a flat column, a
bitwise ``&`` between numbers (the classic ``a > 1 & b < 2`` precedence trap).

A column's type here is only what the evaluators need: its list depth (0 for
one value per event, 1 for a jagged collection) and its scalar kind.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from delivery.errors import InputError, SelectionError
from delivery.selection.expr import (
    MAX_NODES,
    REDUCTIONS,
    Binary,
    Call,
    Compare,
    Expr,
    Name,
    Num,
    Unary,
)

__all__ = ["ColumnType", "infer", "inline_aliases", "close_matches"]

_RANK = {"bool": 0, "int": 1, "float": 2}
MAX_INLINED_NODES = 10 * MAX_NODES


@dataclass(frozen=True)
class ColumnType:
    depth: int  # 0 flat, 1 jagged; anything deeper cannot enter an expression
    kind: str  # "bool", "int" or "float"


def _promote(*kinds: str) -> str:
    return max(kinds, key=_RANK.__getitem__)


def close_matches(name: str, candidates: list[str], limit: int = 5) -> str:
    """A short, bounded hint listing names close to ``name``."""
    found = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)
    return f"; close matches: {', '.join(found)}" if found else ""


def inline_aliases(expr: Expr, aliases: Mapping[str, Expr], field: str) -> Expr:
    """Replace alias names by their definitions, refusing cycles and blow-ups."""
    budget = [MAX_INLINED_NODES]

    def walk(e: Expr, active: tuple[str, ...]) -> Expr:
        budget[0] -= 1
        if budget[0] < 0:
            raise SelectionError(f"aliases expand to more than {MAX_INLINED_NODES} parts",
                                 field=field)
        if isinstance(e, Name) and e.name in aliases:
            if e.name in active:
                cycle = " -> ".join((*active, e.name))
                raise SelectionError(f"aliases refer to themselves: {cycle}", field=field)
            return walk(aliases[e.name], (*active, e.name))
        if isinstance(e, Unary):
            return Unary(e.op, walk(e.operand, active))
        if isinstance(e, Binary):
            return Binary(e.op, walk(e.left, active), walk(e.right, active))
        if isinstance(e, Compare):
            return Compare(e.op, walk(e.left, active), walk(e.right, active))
        if isinstance(e, Call):
            return Call(e.func, tuple(walk(a, active) for a in e.args))
        return e

    return walk(expr, ())


def infer(expr: Expr, columns: Mapping[str, ColumnType], field: str) -> ColumnType:
    """The type of ``expr`` over ``columns``; raises on names or operations that cannot work."""
    if isinstance(expr, Num):
        v = expr.value
        if isinstance(v, int) and abs(v) > 2**63 - 1:  # numpy and awkward cannot take it
            raise SelectionError(f"integer literal {v} exceeds 64 bits; write it as a float "
                                 "(e.g. 1e20)", field=field)
        return ColumnType(0, "bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                          else "float")
    if isinstance(expr, Name):
        col = columns.get(expr.name)
        if col is None:
            raise InputError(f"{field}: no branch named {expr.name!r}"
                             + close_matches(expr.name, list(columns)))
        if col.depth > 1:
            raise SelectionError(f"branch {expr.name!r} is nested deeper than one list; "
                                 "expressions take flat and jagged branches", field=field)
        return col
    if isinstance(expr, Unary):
        t = infer(expr.operand, columns, field)
        if expr.op == "~":
            if t.kind == "float":
                raise SelectionError("~/not needs a boolean, not a number", field=field)
            return t
        if t.kind == "bool" and expr.op == "-":  # numpy refuses to negate booleans
            raise SelectionError("- needs a number, not a boolean; use ~ or not", field=field)
        return ColumnType(t.depth, _promote(t.kind, "int"))
    if isinstance(expr, Compare):
        a, b = infer(expr.left, columns, field), infer(expr.right, columns, field)
        return ColumnType(max(a.depth, b.depth), "bool")
    if isinstance(expr, Binary):
        a, b = infer(expr.left, columns, field), infer(expr.right, columns, field)
        depth = max(a.depth, b.depth)
        if expr.op in "&|":
            # bool & int is the precedence trap: "n >= 2 & x < 5" parses as n >= (2 & x) < 5.
            if "float" in (a.kind, b.kind) or {a.kind, b.kind} == {"bool", "int"}:
                raise SelectionError(
                    f"{expr.op} needs booleans; put comparisons in parentheses, "
                    f"e.g. (a > 1) {expr.op} (b < 2)", field=field)
            return ColumnType(depth, _promote(a.kind, b.kind))
        if expr.op in ("/", "**"):
            return ColumnType(depth, "float")
        return ColumnType(depth, _promote(a.kind, b.kind, "int"))
    assert isinstance(expr, Call)
    args = [infer(a, columns, field) for a in expr.args]
    depth = max(a.depth for a in args)
    if expr.func in REDUCTIONS:
        if args[0].depth != 1:
            raise SelectionError(f"{expr.func}() reduces a jagged collection; its argument "
                                 "has one value per event", field=field)
        kind = {"count": "int", "num": "int", "any": "bool", "all": "bool",
                "sum": _promote(args[0].kind, "int")}.get(expr.func, "float")
        return ColumnType(0, kind)
    if expr.func == "where":
        if args[0].kind != "bool":
            raise SelectionError("where() needs a boolean condition first", field=field)
        return ColumnType(depth, _promote(args[1].kind, args[2].kind))
    if expr.func in ("minimum", "maximum"):
        return ColumnType(depth, _promote(args[0].kind, args[1].kind))
    if expr.func == "abs":
        return ColumnType(depth, _promote(args[0].kind, "int"))
    return ColumnType(depth, "float")
