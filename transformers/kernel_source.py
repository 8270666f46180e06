"""The Python source of a numba kernel, generated from the expression IR.

Contract: :func:`build_spec` takes a validated expression, the depth (0 or 1) and
numpy dtype of each column it reads, and the depth of its result. It returns a
:class:`KernelSpec` -- the text of a module defining ``kernel(n, c0, o0, c1, ...)``
and the layout of those arguments -- or None when the expression is beyond the
kernels. Nothing here compiles, writes or imports that text:
:mod:`transformers.kernels` does.

Safety: the source of the ``@njit`` function is generated from the validated IR
alone. Branch names become positional arguments (``c0, o0, ...``), literals are
re-emitted with ``repr(int(v))``/``repr(float(v))``, dtype and function names come
from fixed tables: no user text reaches the file.

Dtypes: a node's dtype is found by running evaluate's own code on a one-element
probe of the real column dtypes, and the kernel casts operands to it, so float32
stays float32, bare literals stay "weak" (NEP 50) and ``where`` promotes as awkward
does. Dtypes are known only from the data, so a kernel specialises on first call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from delivery.selection.expr import Binary, Call, Compare, Expr, Name, Num, Unary
from transformers.evaluate import evaluate_node

__all__ = ["KERNEL_DTYPES", "NOMINAL_DTYPES", "KernelSpec", "build_spec", "node_count"]

# The dtypes kernels read and write, and those NanoAOD gives each nominal column kind.
KERNEL_DTYPES = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64".split())
NOMINAL_DTYPES = {"bool": np.dtype(np.bool_), "int": np.dtype(np.int32),
                  "float": np.dtype(np.float32)}
_UFUNCS = {f: f"np.{f}" for f in ("abs sqrt exp log log10 log2 sin cos tan arcsin arccos arctan "
                                  "sinh cosh tanh arcsinh arccosh arctanh arctan2 hypot").split()}
# Operators are emitted from this table, never copied from the IR.
_OPS = {op: op for op in "+ - * / ** & | ~ < <= > >= == !=".split()}

# Helpers of every generated module. numba's // and % follow Python (and trap on
# MIN // -1); these follow numpy's npy_divmod step by step, so results match bit for bit.
_PRELUDE = '''import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True, error_model="numpy")

@_jit
def _fdivmod(a, b, one):
    mod = np.fmod(a, b)
    if not b:
        return a / b, mod
    div = (a - mod) / b
    if mod:
        if (b < 0) != (mod < 0):
            mod, div = mod + b, div - one
    else:
        mod = np.copysign(one - one, b)
    if not div:
        return np.copysign(one - one, a / b), mod
    floordiv = np.floor(div)
    return (floordiv + one if div - floordiv > one / (one + one) else floordiv), mod

@_jit
def _idivmod(a, b):
    if b == 0 or (b < 0 and b == -1):
        return (a - a if b == 0 else -a), a - a
    return a // b, a % b

@_jit
'''


class _Unsupported(Exception):
    pass


def _np(dt: np.dtype) -> str:
    return "np.bool_" if dt.kind == "b" else f"np.{dt.name}"


def _cast(code: str, src: np.dtype | None, dst: np.dtype) -> str:
    # src None: always cast, since numba widens small ints and bool arithmetic; numpy does not.
    return code if src == dst else f"{_np(dst)}({code})"


def _literal(v: Any) -> tuple[str, np.dtype]:
    try:
        dt = np.asarray(v).dtype
    except OverflowError:
        raise _Unsupported from None
    if dt.name not in KERNEL_DTYPES:
        raise _Unsupported
    if dt.kind in "biu":
        return (repr(bool(v)) if dt.kind == "b" else f"{_np(dt)}({int(v)!r})"), dt
    f = float(v)
    text = repr(f) if math.isfinite(f) else "np.nan" if f != f else "np.inf" if f > 0 else "-np.inf"
    return f"{_np(dt)}({text})", dt


def _kind(p: ak.Array) -> tuple[int, np.dtype]:
    layout, depth = p.layout, 0
    if isinstance(layout, ak.contents.ListOffsetArray | ak.contents.ListArray):
        layout, depth = layout.content, 1
    if not isinstance(layout, ak.contents.NumpyArray) or layout.dtype.name not in KERNEL_DTYPES:
        raise _Unsupported
    return depth, layout.dtype


def _children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Unary):
        return (e.operand,)
    if isinstance(e, Binary | Compare):
        return (e.left, e.right)
    return e.args if isinstance(e, Call) else ()


@dataclass
class _Loop:
    group: list[int] = field(default_factory=list)  # jagged args read element by element
    body: list[str] = field(default_factory=list)


@dataclass
class KernelSpec:
    """The source of a kernel's module and the layout of its arguments."""

    source: str
    names: tuple[str, ...]
    groups: list[list[int]]  # args whose counts must agree in every event
    ref: int  # the arg whose offsets a jagged result shares


class _Source:
    """Straight-line code, one temporary per node, at the outermost loop it can live in."""

    def __init__(self, cols: Mapping[str, tuple[int, np.dtype]]) -> None:
        self.cols = cols
        self.args: dict[str, int] = {}  # column name -> argument number
        self.event: list[str] = []  # statements run once per event
        self.loops: list[_Loop] = []
        self.probes: dict[int, Any] = {}
        self.memo: dict[tuple[Expr, int], tuple[str, np.dtype]] = {}

    def probe(self, e: Expr, func: str | None = None) -> Any:
        """``e`` evaluated on one event holding one element, by evaluate itself."""
        if func is None and id(e) in self.probes:
            return self.probes[id(e)]
        kids = _children(e)
        slots = tuple(Name(f"p{k}") for k in range(len(kids)))
        env = {f"p{k}": self.probe(kid) for k, kid in enumerate(kids)}
        if isinstance(e, Num):
            return e.value
        if isinstance(e, Name):
            depth, dt = self.cols[e.name]
            p = ak.values_astype(ak.Array([[1]] if depth else [1]), dt)
        else:
            node: Expr = (Call(func, slots) if func else Unary(e.op, slots[0])
                          if isinstance(e, Unary) else Call(e.func, slots) if isinstance(e, Call)
                          else type(e)(e.op, *slots))  # fmt: skip
            try:
                with np.errstate(all="ignore"):
                    p = evaluate_node(node, env)
            except Exception:  # whatever evaluate refuses, the kernel does not attempt
                raise _Unsupported from None
        if func is None:
            self.probes[id(e)] = p
        return p

    def gen(self, e: Expr, loop: _Loop | None) -> tuple[str, np.dtype]:
        """Code of an atom (arg, literal or temporary) holding the value of ``e``."""
        p = self.probe(e)
        if not isinstance(p, ak.Array):
            return _literal(p)  # a constant subtree, already folded by numpy itself
        depth, dt = _kind(p)
        if depth == 1 and loop is None:
            raise _Unsupported
        if isinstance(e, Name):
            m = self.args.setdefault(e.name, len(self.args))
            if depth == 0:
                return f"c{m}[i]", dt
            assert loop is not None
            loop.group += [] if m in loop.group else [m]
            return f"c{m}[o{m}[i] + k]", dt
        scope = loop if depth == 1 else None  # event-level values are hoisted out of loops
        key = (e, id(scope))
        if key not in self.memo:
            code = self.node(e, scope, dt)
            (scope.body if scope else self.event).append(f"t{len(self.memo)} = {code}")
            self.memo[key] = (f"t{len(self.memo)}", dt)
        return self.memo[key]

    def node(self, e: Expr, loop: _Loop | None, dt: np.dtype) -> str:
        if isinstance(e, Call) and e.func not in _UFUNCS and e.func not in ("minimum", "maximum",
                                                                             "where"):
            return self.reduce(e, dt)
        args = [self.gen(a, loop) for a in _children(e)]
        cast = [_cast(c, t, dt) for c, t in args] + [""]  # operands in the result's dtype
        a, b = cast[0], cast[1]
        if isinstance(e, Unary):
            if e.op == "+" or (e.op == "~" and dt.kind == "b"):
                return args[0][0] if e.op == "+" else f"not {args[0][0]}"
            return _cast(f"{_OPS[e.op]}{a}", None, dt)
        if isinstance(e, Compare):  # compared in the dtype numpy's comparison loop uses
            common = _kind(self.probe(e, "maximum"))[1]
            return f"{_cast(*args[0], common)} {_OPS[e.op]} {_cast(*args[1], common)}"
        if isinstance(e, Binary) and e.op in ("//", "%"):
            helper = f"_fdivmod({a}, {b}, {_np(dt)}(1))" if dt.kind == "f" else f"_idivmod({a}, {b})"
            return _cast(f"{helper}[{int(e.op == '%')}]", None, dt)
        if isinstance(e, Binary):
            return _cast(f"{a} {_OPS[e.op]} {b}", None, dt)
        assert isinstance(e, Call)
        if e.func == "where":
            return f"{b} if {args[0][0]} else {cast[2]}"
        if e.func in ("minimum", "maximum"):  # NaN propagates, as in numpy
            return f"{a} if ({a} {'<=' if e.func == 'minimum' else '>='} {b} or {a} != {a}) else {b}"
        return _cast(f"{_UFUNCS[e.func]}({', '.join(c for c in (a, b) if c)})", None, dt)

    def reduce(self, e: Call, dt: np.dtype) -> str:
        """An inner loop over one event's elements, emitted at event level."""
        loop = _Loop()
        self.loops.append(loop)
        r = f"r{len(self.loops)}"  # named before the argument, whose reductions come first
        arg, at = self.gen(e.args[0], loop)
        ref = f"o{loop.group[0]}"
        count = f"{ref}[i + 1] - {ref}[i]"
        if e.func == "num" or (e.func == "count" and at.kind != "b"):
            self.event.append(f"{r} = np.int64({count})")  # count() of numbers counts them all
            return r
        init, update, final = {
            "sum": (f"{_np(dt)}(0)", [f"{r} = {r} + {_cast(arg, at, dt)}"], r),
            "count": ("np.int64(0)", [f"if {arg}:", f"    {r} = {r} + 1"], r),
            "any": ("False", [f"if {arg}:", f"    {r} = True", "    break"], r),
            "all": ("True", [f"if not {arg}:", f"    {r} = False", "    break"], r),
            # awkward's min/max skip NaN (x < acc is false); an empty list gives NaN
            "min": ("np.inf", [f"v{r} = np.float64({arg})", f"if v{r} < {r}:", f"    {r} = v{r}"],
                    f"np.nan if {count} == 0 else {r}"),
            "max": ("-np.inf", [f"v{r} = np.float64({arg})", f"if v{r} > {r}:", f"    {r} = v{r}"],
                    f"np.nan if {count} == 0 else {r}"),
            "mean": ("0.0", [f"{r} = {r} + np.float64({arg})"], f"{r} / ({count})"),
        }[e.func]
        self.event += [f"{r} = {init}", f"for k in range({count}):"]
        self.event += ["    " + line for line in loop.body + update] + [f"{r} = {final}"]
        return r


def build_spec(expr: Expr, cols: Mapping[str, tuple[int, np.dtype]],
               depth: int) -> KernelSpec | None:
    """The kernel of ``expr`` for columns of these ``(depth, dtype)``, whose result has
    ``depth``; None when it needs what the kernels do not do."""
    src, top = _Source(cols), (_Loop() if depth == 1 else None)
    try:
        code, dt = src.gen(expr, top)
    except (_Unsupported, KeyError, RecursionError):
        return None
    params = ", ".join(f"c{m}, o{m}" if cols[n][0] else f"c{m}" for n, m in src.args.items())
    event = ["        " + line for line in src.event]
    lines = [f"def kernel(n, {params}):"]
    if top is None:
        lines += [f"    out = np.empty(n, {_np(dt)})", "    for i in range(n):", *event,
                  f"        out[i] = {code}"]
    else:
        o = f"o{top.group[0]}"
        lines += [f"    base = {o}[0]", f"    out = np.empty({o}[n] - base, {_np(dt)})",
                  "    for i in range(n):", *event, f"        s = {o}[i] - base",
                  f"        for k in range({o}[i + 1] - {o}[i]):",
                  *["            " + line for line in top.body], f"            out[s + k] = {code}"]
    groups = [g for g in [lp.group for lp in src.loops] + [top.group if top else []] if len(g) > 1]
    source = _PRELUDE + "\n".join(lines) + "\n    return out\n"
    return KernelSpec(source, tuple(src.args), groups, top.group[0] if top else -1)


def node_count(e: Expr) -> int:
    """Nodes in ``e``: what numba's compile time grows with."""
    return 1 + sum(node_count(c) for c in _children(e))
