"""Resolve one tree query against one table: what to read, what to compute, what to write.

Contract: :func:`make_plan` does every check that needs only the catalogue
(names, types), so a bad query fails before a single basket is read. The plan
reads only the branches that the outputs and the cut name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from delivery.errors import SelectionError
from delivery.selection.expr import Expr, Name, names_in
from delivery.selection.model import TreeQuery
from delivery.selection.types import ColumnType, infer, inline_aliases
from transformers.table import Table

__all__ = ["Output", "Plan", "make_plan"]


@dataclass(frozen=True)
class Output:
    column: str  # name in the output file
    expr: Expr | None  # None: the branch ``column`` is copied as it is
    type: ColumnType | None = None


@dataclass
class Plan:
    table: Table
    output_name: str
    read: list[str]
    outputs: list[Output]
    cut: Expr | None = None
    cut_type: ColumnType | None = None
    types: dict[str, ColumnType] = field(default_factory=dict)


def _inline(query: TreeQuery, expr: Expr, where: str) -> Expr:
    aliases = {name: e for name, (_, e) in query.aliases.items()}
    return inline_aliases(expr, aliases, where) if aliases else expr


def make_plan(table: Table, query: TreeQuery, output_name: str, where: str) -> Plan:
    outputs: list[Output] = []
    needed: set[str] = set()
    if query.expressions is not None:
        for i, (text, expr) in enumerate(query.expressions):
            full = _inline(query, expr, f"{where}.expressions[{i}]")
            if isinstance(full, Name):
                outputs.append(Output(text, None if text == full.name else full))
            else:
                outputs.append(Output(text, full))
            needed |= names_in(full)
    else:
        names = table.match(query.filter_name or ["*"], f"{where}.filter_name")
        if query.filter_typename:
            names = table.match_types(names, query.filter_typename)
        outputs = [Output(n, None) for n in names]
    if not outputs:
        raise SelectionError("selects no columns", field=where)
    raw = [o.column for o in outputs if o.expr is None]
    if query.expressions is not None:
        # Bare names in expressions must exist: reuse the matcher for its message.
        table.match(raw, f"{where}.expressions")

    cut = None
    if query.cut is not None:
        cut = _inline(query, query.cut[1], f"{where}.cut")
        needed |= names_in(cut)

    # Names are checked against the full catalogue before any read, for a good message.
    if needed:
        table.match(sorted(needed), f"{where}")
    types = table.types(sorted(needed)) if needed else {}

    typed: list[Output] = []
    for i, out in enumerate(outputs):
        if out.expr is None:
            typed.append(out)
        else:
            typed.append(Output(out.column, out.expr,
                                infer(out.expr, types, f"{where}.expressions[{i}]")))
    cut_type = None
    if cut is not None:
        cut_type = infer(cut, types, f"{where}.cut")
        if cut_type.kind != "bool":
            raise SelectionError("must be a true/false condition, e.g. 'MET_pt > 30'",
                                 field=f"{where}.cut")
    read = list(dict.fromkeys(raw + sorted(needed)))
    return Plan(table, output_name, read, typed, cut, cut_type, types)
