"""Property-based test (hypothesis): the numba kernels agree with the awkward evaluator.

Well-typed expressions (arithmetic, comparisons, boolean logic, where, minimum and
maximum, sqrt and abs, the reductions, a transcendental function on top) over a
generated tiny table (flat columns of five dtypes, a muon collection, a jet
collection of other counts, NaN, infinities, signed zeros and integer extremes)
give the same values on both paths: bit for bit (NaN equals NaN), or within 1e-6
relative where a transcendental function may differ in the last ulp.

Budget: each distinct expression compiles its own kernel (0.1-1 s), so examples
are bounded and never shrunk (a failure notes its expression and table instead).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, note, settings
from hypothesis import strategies as st

from delivery.errors import SelectionError
from delivery.selection.expr import parse_expression
from delivery.selection.types import ColumnType, infer
from transformers.evaluate import evaluate


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("kernels")
    mp = pytest.MonkeyPatch()
    mp.setenv("DELIVERY_KERNEL_CACHE", str(path))
    yield path
    mp.undo()



# Typed columns of the generated table: flat ones, a muon collection (same counts)
# and a jet collection (its own counts, so it appears only inside reductions).
def _kind(dtype: Any) -> str:
    return "bool" if dtype is np.bool_ else "int" if np.issubdtype(dtype, np.integer) else "float"


FLAT = {"f": np.float32, "d": np.float64, "i": np.int32, "l": np.int64, "b": np.bool_}
MUON = {"pt": np.float32, "q": np.int32, "t": np.bool_}
JET = {"jet": np.float32}
KTYPES = {**{k: ColumnType(0, _kind(v)) for k, v in FLAT.items()},
          **{k: ColumnType(1, _kind(v)) for k, v in {**MUON, **JET}.items()}}
EXACT_FUNCS = ("abs", "sqrt", "minimum", "maximum")  # correctly rounded in numpy and LLVM
INEXACT_FUNCS = ("exp", "log", "sin", "tanh", "arctan", "log10")


def _ints(dtype: Any) -> st.SearchStrategy[int]:
    info = np.iinfo(dtype)
    return st.sampled_from([0, 1, -1, 2, -2, 7, int(info.max), int(info.min)]) | \
        st.integers(-1000, 1000)


def _values(dtype: Any, size: int) -> st.SearchStrategy[np.ndarray]:
    if dtype is np.bool_:
        elements: st.SearchStrategy[Any] = st.booleans()
    elif np.issubdtype(dtype, np.integer):
        elements = _ints(dtype)
    else:
        floats = st.floats(width=32) if dtype is np.float32 else st.floats()
        elements = floats | st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.5, 1e30])
    return st.lists(elements, min_size=size, max_size=size).map(lambda v: np.array(v, dtype))


@st.composite
def tables(draw: st.DrawFn) -> tuple[int, dict[str, ak.Array]]:
    n = draw(st.integers(0, 8))
    mu = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    jets = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    cols: dict[str, ak.Array] = {k: ak.Array(draw(_values(v, n))) for k, v in FLAT.items()}
    for group, counts in ((MUON, mu), (JET, jets)):
        for k, v in group.items():
            cols[k] = ak.unflatten(draw(_values(v, sum(counts))), np.array(counts, np.int64))
    return n, cols


_LITERALS = ["0", "1", "2", "3", "0.5", "2.5", "-1", "100", "1e10"]


@functools.cache
def typed(kind: str, coll: str | None, budget: int) -> st.SearchStrategy[str]:
    """Text of a well-typed expression: ``kind`` num or bool; ``coll`` None (one value per
    event) or a collection whose elements it may range over."""
    flat_nums = ["f", "d", "i", "l"]
    coll_nums = {"mu": ["pt", "q"], "jet": ["jet"], None: []}[coll]
    if kind == "num":
        leaves = st.sampled_from(flat_nums + coll_nums * 2 + _LITERALS)
    else:
        leaves = st.sampled_from(["b"] + (["t", "t"] if coll == "mu" else []))
    if budget <= 0:
        return leaves
    sub = budget - 1
    if kind == "num":
        num = typed("num", coll, sub)
        options = [
            leaves,
            st.tuples(num, st.sampled_from(["+", "-", "*", "/", "//", "%"]), num)
            .map(lambda x: f"({x[0]} {x[1]} {x[2]})"),
            st.tuples(num, st.sampled_from(["0", "1", "2", "3"])).map(lambda x: f"({x[0]} ** {x[1]})"),
            num.map(lambda x: f"(-{x})"),
            st.tuples(st.sampled_from(EXACT_FUNCS[:2]), num).map(lambda x: f"{x[0]}({x[1]})"),
            st.tuples(st.sampled_from(EXACT_FUNCS[2:]), num, num)
            .map(lambda x: f"{x[0]}({x[1]}, {x[2]})"),
            st.tuples(typed("bool", coll, sub), num, num).map(lambda x: f"where({x[0]}, {x[1]}, {x[2]})"),
        ]
        if coll is None:
            for c in ("mu", "jet"):
                inner = typed("num", c, sub)
                options += [
                    st.tuples(st.sampled_from(["sum", "min", "max", "mean", "num"]), inner)
                    .map(lambda x: f"{x[0]}({x[1]})"),
                    typed("bool", c, sub).map(lambda x: f"count({x})")]
        return st.one_of(*options)
    num, boolean = typed("num", coll, sub), typed("bool", coll, sub)
    options = [
        leaves,
        st.tuples(num, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), num)
        .map(lambda x: f"({x[0]} {x[1]} {x[2]})"),
        st.tuples(boolean, st.sampled_from(["&", "|", "and", "or"]), boolean)
        .map(lambda x: f"({x[0]} {x[1]} {x[2]})"),
        boolean.map(lambda x: f"(~{x})"),
    ]
    if coll is None:
        options += [st.tuples(st.sampled_from(["any", "all"]), typed("bool", c, sub))
                    .map(lambda x: f"{x[0]}({x[1]})") for c in ("mu", "jet")]
    return st.one_of(*options)


def expressions() -> st.SearchStrategy[tuple[str, bool]]:
    """(text, exact): inexact ones end in a transcendental function, compared with a tolerance."""
    exact = st.one_of(*(typed(k, c, 3) for k in ("num", "bool") for c in (None, "mu")))
    inexact = st.tuples(st.sampled_from(INEXACT_FUNCS), typed("num", "mu", 2)) \
        .map(lambda x: f"{x[0]}({x[1]})")
    return st.one_of(exact.map(lambda s: (s, True)), inexact.map(lambda s: (s, False)))


def assert_same(got: Any, ref: Any, exact: bool) -> None:
    """Same list lengths, dtype and values; NaN equals NaN; inexact: within 1e-6 relative."""
    if isinstance(got, ak.Array):
        assert ak.to_list(ak.num(got, axis=1)) == ak.to_list(ak.num(ref, axis=1))
        got, ref = ak.flatten(got), ak.flatten(ref)
    got = np.asarray(got)
    ref = np.asarray(ak.to_numpy(ref) if isinstance(ref, ak.Array) else ref)
    assert got.dtype == ref.dtype and got.shape == ref.shape, (got.dtype, ref.dtype)
    if exact or got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-6, equal_nan=True)


KERNEL_STATS: dict[str, int] = {}
COMPARED: set[str] = set()


# No shrinking: each step compiles a kernel, and a failure prints its expression anyway.
@settings(max_examples=200, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
@given(case=expressions(), table=tables())
def test_kernels_agree_with_awkward(kernel_cache: Path, case: tuple[str, bool],
                                    table: tuple[int, dict[str, ak.Array]]) -> None:
    from transformers.kernels import compile_kernel

    text, exact = case
    n, cols = table
    note(f"expression: {text}; events: {n}; columns: {ak.to_list(ak.zip(cols, depth_limit=1))}")
    expr = parse_expression(text)
    try:
        infer(expr, KTYPES, "cut")
    except SelectionError:  # e.g. a reduction whose argument turned out flat
        assume(False)
    try:
        with np.errstate(all="ignore"):
            want = evaluate(expr, cols, n)
    except SelectionError as err:  # numpy refuses (integer ** negative, ...): so may the kernel
        event(f"evaluate refuses: {err.reason[:40]}")
        assume(False)
    kernel = compile_kernel(expr, KTYPES)
    if kernel is None:
        KERNEL_STATS["no kernel"] = KERNEL_STATS.get("no kernel", 0) + 1
        return
    got = kernel(cols, n)
    KERNEL_STATS["compared"] = KERNEL_STATS.get("compared", 0) + 1
    COMPARED.add(text)
    assert_same(got, want, exact)


def test_kernels_were_compared() -> None:
    if not KERNEL_STATS:
        pytest.skip("run with the property above")
    print(f"\nkernels vs awkward: {KERNEL_STATS}, {len(COMPARED)} distinct expressions, e.g. "
          + "; ".join(sorted(COMPARED, key=len)[-3:]))
    assert len(COMPARED) >= 10
