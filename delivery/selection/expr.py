"""The expression language of ``cut``, ``expressions`` and ``aliases``.

A user's string is parsed with :mod:`ast` and translated, node by node, into a
small intermediate form (the ``Expr`` classes below). Only what is listed here
is accepted; everything else is a :class:`SelectionError` naming the construct
and its column. Nothing is ever evaluated by Python: the IR is interpreted by
the engine (awkward) or compiled from the IR alone (numba).

Accepted:
- numeric literals (and True/False), branch and alias names; dotted names such
  as ``AnalysisElectronsAuxDyn.pt`` are a single branch name, never attributes;
- ``+ - * / // %``, ``**`` with a literal exponent of at most 16 in size;
- comparisons, chained ones too (``0 < x < 5``);
- ``& | ~`` and ``and or not`` (element-wise, like numpy), parentheses;
- the functions in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import TypeAlias

from delivery.errors import SelectionError

__all__ = [
    "Expr",
    "Num",
    "Name",
    "Unary",
    "Binary",
    "Compare",
    "Call",
    "FUNCTIONS",
    "REDUCTIONS",
    "parse_expression",
    "names_in",
]

MAX_LENGTH = 4096
MAX_NODES = 1000
MAX_DEPTH = 64
MAX_EXPONENT = 16
MAX_LITERAL = 1e300


@dataclass(frozen=True)
class Num:
    value: float | int | bool


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Unary:
    op: str  # "-", "+", "~"  ("not" is folded into "~")
    operand: Expr


@dataclass(frozen=True)
class Binary:
    op: str  # "+", "-", "*", "/", "//", "%", "**", "&", "|"
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare:
    op: str  # "<", "<=", ">", ">=", "==", "!="
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...]


Expr: TypeAlias = "Num | Name | Unary | Binary | Compare | Call"

# name -> number of arguments. Aliases map onto one canonical name.
ELEMENTWISE = {
    "abs": 1, "sqrt": 1, "exp": 1, "log": 1, "log10": 1, "log2": 1,
    "sin": 1, "cos": 1, "tan": 1, "arcsin": 1, "arccos": 1, "arctan": 1,
    "sinh": 1, "cosh": 1, "tanh": 1, "arcsinh": 1, "arccosh": 1, "arctanh": 1,
    "arctan2": 2, "hypot": 2, "minimum": 2, "maximum": 2, "where": 3,
}  # fmt: skip
REDUCTIONS = {"sum": 1, "count": 1, "num": 1, "any": 1, "all": 1, "min": 1, "max": 1, "mean": 1}
FUNCTIONS = {**ELEMENTWISE, **REDUCTIONS}
_SYNONYMS = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "atan2": "arctan2",
             "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "fabs": "abs"}  # fmt: skip

_BINOPS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|",
}  # fmt: skip
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~", ast.Not: "~"}

# What to call a rejected node, so the message speaks the user's language.
_CONSTRUCTS = {
    ast.Lambda: "lambda", ast.ListComp: "comprehension", ast.SetComp: "comprehension",
    ast.DictComp: "comprehension", ast.GeneratorExp: "comprehension",
    ast.Subscript: "indexing", ast.Attribute: "attribute access", ast.Starred: "unpacking",
    ast.List: "list", ast.Tuple: "tuple", ast.Dict: "dict", ast.Set: "set",
    ast.IfExp: "conditional expression (use where())", ast.NamedExpr: "assignment",
    ast.JoinedStr: "string", ast.Await: "await", ast.Yield: "yield",
}  # fmt: skip


def _error(node: ast.AST | None, field: str, what: str) -> SelectionError:
    col = getattr(node, "col_offset", None)
    return SelectionError(what, field=field, position=None if col is None else col + 1)


def _check_identifier(name: str, node: ast.AST, field: str) -> None:
    if "__" in name:
        raise _error(node, field, f"name {name!r} is not allowed (double underscore)")


class _Translator:
    def __init__(self, field: str) -> None:
        self.field = field
        self.nodes = 0

    def __call__(self, node: ast.AST, depth: int = 0) -> Expr:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _error(node, self.field, f"expression has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise _error(node, self.field, f"expression nests deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            _check_identifier(node.id, node, self.field)
            return Name(node.id)
        if isinstance(node, ast.Attribute):
            return Name(self._dotted(node))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            operand = self(node.operand, d)
            op = _UNARY[type(node.op)]
            if op == "-" and isinstance(operand, Num) and not isinstance(operand.value, bool):
                return Num(-operand.value)
            return Unary(op, operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            op = _BINOPS[type(node.op)]
            left = self(node.left, d)
            right = self(node.right, d)
            if op == "**":
                self._check_exponent(node.right, right)
            return Binary(op, left, right)
        if isinstance(node, ast.BoolOp):
            op = "&" if isinstance(node.op, ast.And) else "|"
            values = [self(v, d) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = Binary(op, out, v)
            return out
        if isinstance(node, ast.Compare):
            return self._compare(node, d)
        if isinstance(node, ast.Call):
            return self._call(node, d)
        what = _CONSTRUCTS.get(type(node), type(node).__name__)
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            what = f"operator {type(node.op).__name__}"
        raise _error(node, self.field, f"{what} is not allowed")

    def _constant(self, node: ast.Constant) -> Num:
        v = node.value
        if isinstance(v, bool):
            return Num(v)
        if isinstance(v, int | float) and not isinstance(v, complex):
            if not math.isfinite(float(v)) or abs(v) > MAX_LITERAL:
                raise _error(node, self.field, "numeric literal is too large")
            return Num(v)
        kind = "string" if isinstance(v, str | bytes) else type(v).__name__
        raise _error(node, self.field, f"{kind} literal is not allowed")

    def _dotted(self, node: ast.Attribute) -> str:
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name):
            raise _error(node, self.field, "attribute access is not allowed")
        parts.append(cur.id)
        name = ".".join(reversed(parts))
        _check_identifier(name, node, self.field)
        return name

    def _check_exponent(self, node: ast.AST, right: Expr) -> None:
        if not isinstance(right, Num) or isinstance(right.value, bool):
            raise _error(node, self.field, "the exponent of ** must be a number literal")
        if abs(right.value) > MAX_EXPONENT:
            raise _error(node, self.field, f"exponent {right.value} exceeds {MAX_EXPONENT}")

    def _compare(self, node: ast.Compare, d: int) -> Expr:
        operands = [self(node.left, d)] + [self(c, d) for c in node.comparators]
        out: Expr | None = None
        for i, op in enumerate(node.ops):
            if type(op) not in _CMPOPS:
                raise _error(node, self.field, f"comparison {type(op).__name__} is not allowed")
            link = Compare(_CMPOPS[type(op)], operands[i], operands[i + 1])
            out = link if out is None else Binary("&", out, link)
        assert out is not None
        return out

    def _call(self, node: ast.Call, d: int) -> Expr:
        if not isinstance(node.func, ast.Name):
            self(node.func, d)  # names the real offence (lambda, attribute, ...) if there is one
            raise _error(node, self.field, "only calls of the listed functions are allowed")
        _check_identifier(node.func.id, node.func, self.field)
        name = _SYNONYMS.get(node.func.id, node.func.id)
        if name not in FUNCTIONS:
            raise _error(
                node, self.field, f"function {node.func.id!r} is not allowed; use one of "
                + ", ".join(sorted(FUNCTIONS))
            )
        if node.keywords:
            raise _error(node, self.field, f"{name}() takes no keyword arguments")
        if len(node.args) != FUNCTIONS[name]:
            raise _error(node, self.field, f"{name}() takes {FUNCTIONS[name]} argument(s)")
        return Call(name, tuple(self(a, d) for a in node.args))


def parse_expression(text: str, field: str = "expression") -> Expr:
    """Parse one user expression into the IR, or raise :class:`SelectionError`."""
    if not isinstance(text, str):
        raise SelectionError(f"must be a string, not {type(text).__name__}", field=field)
    if len(text) > MAX_LENGTH:
        raise SelectionError(f"expression is {len(text)} characters; the limit is {MAX_LENGTH}",
                             field=field)
    if not text.strip():
        raise SelectionError("expression is empty", field=field)
    # Python's own parser refuses ~200 nested brackets; catch its complaints as ours.
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise SelectionError(f"syntax error: {err.msg}", field=field, position=err.offset) from None
    except (RecursionError, MemoryError, ValueError):
        raise SelectionError("expression is too deeply nested", field=field) from None
    return _Translator(field)(tree.body)


def names_in(expr: Expr) -> set[str]:
    """Every branch or alias name the expression mentions."""
    out: set[str] = set()
    stack: list[Expr] = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Name):
            out.add(e.name)
        elif isinstance(e, Unary):
            stack.append(e.operand)
        elif isinstance(e, Binary | Compare):
            stack += [e.left, e.right]
        elif isinstance(e, Call):
            stack += list(e.args)
    return out
