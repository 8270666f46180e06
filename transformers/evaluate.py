"""Evaluate the expression IR on awkward arrays: the reference implementation.

The numba kernels in :mod:`transformers.kernels` must agree with this module
value for value; tests compare the two. Semantics, the same for TTree and
RNTuple:

- arithmetic and comparisons broadcast an event's value over its collection;
- ``sum`` of booleans counts them; ``count(x)`` counts true (non-zero) elements,
  ``num(x)`` counts all elements;
- ``min``, ``max`` and ``mean`` of an empty collection are NaN, so any comparison
  with them is false and the event fails the cut;
- two jagged branches combine only if every event has as many of each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import awkward as ak
import numpy as np

from delivery.errors import SelectionError
from delivery.selection.expr import Binary, Call, Compare, Expr, Name, Num, Unary

__all__ = ["evaluate", "evaluate_node"]

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide,
    "//": np.floor_divide, "%": np.mod, "**": np.power, "&": np.bitwise_and, "|": np.bitwise_or,
}  # fmt: skip
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}  # fmt: skip
_UFUNCS: dict[str, Callable[..., Any]] = {
    "abs": np.absolute, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "log10": np.log10,
    "log2": np.log2, "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin,
    "arccos": np.arccos, "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "arcsinh": np.arcsinh, "arccosh": np.arccosh, "arctanh": np.arctanh, "arctan2": np.arctan2,
    "hypot": np.hypot, "minimum": np.minimum, "maximum": np.maximum, "where": np.where,
}  # fmt: skip


def _is_bool(x: Any) -> bool:
    if isinstance(x, ak.Array):
        layout = x.layout
        while not isinstance(layout, ak.contents.NumpyArray) and hasattr(layout, "content"):
            layout = layout.content
        return isinstance(layout, ak.contents.NumpyArray) and layout.dtype == np.bool_
    return bool(np.asarray(x).dtype == np.bool_)


def _reduce(func: str, x: Any) -> Any:
    if func == "num":
        return ak.num(x, axis=1)
    if func == "count":
        return ak.count_nonzero(x, axis=1) if _is_bool(x) else ak.num(x, axis=1)
    if func == "any":
        return ak.any(x, axis=1)
    if func == "all":
        return ak.all(x, axis=1)
    if func == "sum":
        return ak.sum(ak.values_astype(x, np.int64) if _is_bool(x) else x, axis=1)
    reducer = {"min": ak.min, "max": ak.max, "mean": ak.mean}[func]
    out = reducer(ak.values_astype(x, np.float64), axis=1)
    return ak.fill_none(out, np.nan)


def _where(cond: Any, a: Any, b: Any) -> Any:
    args = [cond, a, b]
    at = [i for i, v in enumerate(args) if isinstance(v, ak.Array)]
    if not at:
        return np.where(cond, a, b)
    if 0 not in at:  # a constant condition (where(1 < 2, x, y)): ak.where refuses scalars
        args[0] = ak.Array(np.full(len(args[at[0]]), bool(cond)))
        at.insert(0, 0)
    # ak.where does not spread an event's value over a collection (it would make a
    # union of numbers and lists): broadcast first, as arithmetic does.
    for i, arr in zip(at, ak.broadcast_arrays(*(args[i] for i in at)), strict=True):
        args[i] = arr
    return ak.where(*args)


def evaluate(expr: Expr, columns: Mapping[str, Any], length: int) -> Any:
    """Value of ``expr`` for each of ``length`` events (an awkward or numpy array)."""
    with np.errstate(all="ignore"):
        out = evaluate_node(expr, columns)
    if not isinstance(out, ak.Array) and np.ndim(out) == 0:
        return np.full(length, out)
    return out


def evaluate_node(expr: Expr, columns: Mapping[str, Any]) -> Any:
    """Value of one node without the final broadcast; used by the kernel planner to
    learn numpy's result dtypes."""
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Name):
        return columns[expr.name]
    if isinstance(expr, Unary):
        v = evaluate_node(expr.operand, columns)
        if expr.op == "~":
            return np.logical_not(v) if _is_bool(v) else np.invert(v)
        return np.negative(v) if expr.op == "-" else v
    if isinstance(expr, Binary | Compare):
        left, right = evaluate_node(expr.left, columns), evaluate_node(expr.right, columns)
        table = _COMPARE if isinstance(expr, Compare) else _BINARY
        try:
            return table[expr.op](left, right)
        except (ValueError, OverflowError) as err:  # Overflow: a literal beyond the dtype
            raise _broadcast_error(err) from None
    assert isinstance(expr, Call)
    args = [evaluate_node(a, columns) for a in expr.args]
    if expr.func in ("sum", "count", "num", "any", "all", "min", "max", "mean"):
        return _reduce(expr.func, args[0])
    try:
        if expr.func == "where":
            return _where(*args)
        return _UFUNCS[expr.func](*args)
    except (ValueError, OverflowError) as err:
        raise _broadcast_error(err) from None


def _broadcast_error(err: ValueError | OverflowError) -> SelectionError:
    if "broadcast" in str(err) or "nested" in str(err):
        return SelectionError("expression combines jagged branches of different collections "
                              "(their lengths differ within an event)")
    return SelectionError(f"cannot evaluate expression: {str(err).splitlines()[0][:150]}")
