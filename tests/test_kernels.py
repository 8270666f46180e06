"""The numba kernels agree with the awkward reference evaluator value for value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from delivery.errors import SelectionError
from delivery.selection.expr import parse_expression
from delivery.selection.types import ColumnType
from transformers import kernels
from transformers.evaluate import evaluate
from transformers.kernels import Kernel, compile_kernel, jit_seconds

N = 400


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("kernels")
    mp = pytest.MonkeyPatch()
    mp.setenv("DELIVERY_KERNEL_CACHE", str(path))
    yield path
    mp.undo()


def _jagged(counts: np.ndarray, values: np.ndarray) -> ak.Array:
    return ak.unflatten(values, counts)


def _data(seed: int = 7) -> dict[str, ak.Array]:
    rng = np.random.default_rng(seed)
    nmu = rng.poisson(1.5, N)
    nmu[:20] = 0  # plenty of empty events: min/max/mean of nothing is NaN
    njet = rng.poisson(4, N)
    m, j = int(nmu.sum()), int(njet.sum())
    iso = rng.exponential(0.1, m)
    iso[rng.random(m) < 0.15] = np.nan  # NaN elements: min/max skip them, mean/sum propagate
    return {
        "Muon_pt": _jagged(nmu, (rng.exponential(20, m) + 3).astype(np.float32)),
        "Muon_eta": _jagged(nmu, rng.normal(0, 1.5, m).astype(np.float32)),
        "Muon_charge": _jagged(nmu, rng.choice(np.array([-1, 1], np.int32), m)),
        "Muon_tight": _jagged(nmu, rng.random(m) < 0.6),
        "Muon_iso": _jagged(nmu, iso.astype(np.float32)),
        "Jet_pt": _jagged(njet, (rng.exponential(40, j) + 15).astype(np.float32)),
        "MET_pt": ak.Array(rng.exponential(30, N).astype(np.float32)),
        "nMuon": ak.Array(nmu.astype(np.int32)),
        "HLT_IsoMu24": ak.Array(rng.random(N) < 0.5),
    }


DATA = _data()
TYPES = {
    "Muon_pt": ColumnType(1, "float"), "Muon_eta": ColumnType(1, "float"),
    "Muon_charge": ColumnType(1, "int"), "Muon_tight": ColumnType(1, "bool"),
    "Muon_iso": ColumnType(1, "float"), "Jet_pt": ColumnType(1, "float"),
    "MET_pt": ColumnType(0, "float"), "nMuon": ColumnType(0, "int"),
    "HLT_IsoMu24": ColumnType(0, "bool"),
}  # fmt: skip

# (expression, exact): transcendental functions may differ in the last ulp between
# numpy's SIMD loops and LLVM's libm; everything else must match bit for bit.
CASES = [
    ("MET_pt > 30", True),
    ("HLT_IsoMu24 & (MET_pt > 25.5)", True),
    ("~HLT_IsoMu24 | (MET_pt <= 10)", True),
    ("0 < MET_pt < 40.7", True),
    ("MET_pt // 7 + MET_pt % 7 - nMuon ** 2", True),
    ("nMuon // 2 + nMuon % 3 + ~nMuon", True),
    ("MET_pt / nMuon", True),
    ("MET_pt > 2 * 15.05", True),
    ("any(Muon_pt > 50)", True),
    ("all(Muon_tight)", True),
    ("count(Muon_pt > 20) >= 2", True),
    ("count(Muon_pt)", True),
    ("num(Jet_pt) >= 3", True),
    ("sum(Jet_pt) > 200", True),
    ("sum(Jet_pt)", True),
    ("sum(Muon_tight) + sum(Muon_charge)", True),
    ("min(Muon_iso)", True),
    ("max(Muon_iso)", True),
    ("mean(Muon_pt)", True),
    ("max(Jet_pt) > 100", True),
    ("sum(Muon_charge) == 0 and count(Muon_pt > 10) == 2", True),
    ("any((abs(Muon_eta) < 2.4) & (Muon_pt > MET_pt / 3))", True),
    ("sum(where(Muon_tight, Muon_pt, 0)) - mean(Jet_pt)", True),
    ("sum(Jet_pt > mean(Jet_pt) + min(Muon_pt))", True),
    ("Muon_pt * Muon_charge + MET_pt", True),
    ("where(Muon_pt > 20, Muon_charge, -Muon_charge)", True),
    ("minimum(Muon_pt, 30) + maximum(Muon_iso, 0.1)", True),
    ("(Muon_pt ** 2 > 400) | ~Muon_tight", True),
    ("Muon_eta // 0.5 + Muon_eta % 0.5 - Muon_eta // nMuon", True),
    ("sqrt(Muon_pt) + log(Muon_pt) * hypot(Muon_eta, 1) - arctan2(Muon_eta, Muon_pt)", False),
]

_KERNELS: dict[str, Kernel] = {}


def _kernel(text: str, types: dict[str, ColumnType] = TYPES) -> Kernel:
    if text not in _KERNELS:
        kernel = compile_kernel(parse_expression(text), types)
        assert kernel is not None, text
        _KERNELS[text] = kernel
    return _KERNELS[text]


def assert_same(got: Any, ref: Any, exact: bool = True) -> None:
    if isinstance(got, ak.Array):  # depth 1: same lists, then same values
        assert ak.to_list(ak.num(got, axis=1)) == ak.to_list(ak.num(ref, axis=1))
        got, ref = ak.flatten(got), ak.flatten(ref)
    got, ref = np.asarray(got), np.asarray(ak.to_numpy(ref) if isinstance(ref, ak.Array) else ref)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if exact or got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref)  # NaN matches NaN, nothing else is loose
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("text,exact", CASES)
def test_matches_evaluate(text: str, exact: bool) -> None:
    kernel = _kernel(text)
    expected_depth = 1 if isinstance(evaluate(parse_expression(text), DATA, N)[0], ak.Array) \
        else 0
    assert kernel.depth == expected_depth
    got = kernel(DATA, N)
    assert all(spec is not None for spec in kernel._specs.values())  # no silent fallback
    assert isinstance(got, ak.Array if kernel.depth else np.ndarray)
    assert_same(got, evaluate(parse_expression(text), DATA, N), exact)


def test_float64_and_int64_columns_get_their_own_specialisation() -> None:
    data = dict(DATA, MET_pt=ak.values_astype(DATA["MET_pt"], np.float64),
                Muon_pt=ak.values_astype(DATA["Muon_pt"], np.float64),
                nMuon=ak.values_astype(DATA["nMuon"], np.int64))
    for text in ("MET_pt > 30", "count(Muon_pt > 20) >= 2", "MET_pt // 7 + MET_pt % 7 - nMuon ** 2",
                 "Muon_pt * Muon_charge + MET_pt"):
        assert_same(_kernel(text)(data, N), evaluate(parse_expression(text), data, N))


def test_sliced_and_listarray_layouts() -> None:
    # a slice keeps the parent's buffers: offsets[0] != 0
    data = {k: v[37:] for k, v in DATA.items()}
    n = N - 37
    assert ak.to_layout(data["Muon_pt"]).offsets[0] != 0
    for text in ("count(Muon_pt > 20) >= 2", "Muon_pt * Muon_charge + MET_pt", "sum(Jet_pt) > 200"):
        assert_same(_kernel(text)(data, n), evaluate(parse_expression(text), data, n))
    # a ListArray (separate starts/stops), as a filter or a concatenation may give
    offsets = ak.to_layout(DATA["Muon_pt"]).offsets.data
    listarray = ak.Array(ak.contents.ListArray(
        ak.index.Index64(offsets[:-1]), ak.index.Index64(offsets[1:]),
        ak.to_layout(DATA["Muon_pt"]).content))
    data = dict(DATA, Muon_pt=listarray)
    for text in ("count(Muon_pt > 20) >= 2", "Muon_pt * Muon_charge + MET_pt"):
        assert_same(_kernel(text)(data, N), evaluate(parse_expression(text), data, N))


def test_int32_offsets_unsigned_columns_and_no_events() -> None:
    offsets = np.array([0, 2, 2, 5], np.int32)
    content = ak.contents.NumpyArray(np.array([1, 25, 3, 40, 50], np.float32))
    pt = ak.Array(ak.contents.ListOffsetArray(ak.index.Index32(offsets), content))
    data = {"Muon_pt": pt, "nMuon": ak.Array(np.array([1, 2, 3], np.uint32))}
    for text in ("Muon_pt * nMuon", "count(Muon_pt > 20) >= nMuon", "sum(Muon_pt) // nMuon"):
        kernel = _kernel(text)
        assert_same(kernel(data, 3), evaluate(parse_expression(text), data, 3))
        empty = {k: v[:0] for k, v in data.items()}
        assert_same(kernel(empty, 0), evaluate(parse_expression(text), empty, 0))


def test_option_type_falls_back_to_evaluate() -> None:
    met = ak.mask(DATA["MET_pt"], np.ones(N, bool))  # ?float32: not a plain buffer
    data = dict(DATA, MET_pt=met)
    assert_same(_kernel("MET_pt > 30")(data, N), evaluate(parse_expression("MET_pt > 30"), data, N))


def test_different_collections_raise() -> None:
    for text in ("Muon_pt + Jet_pt", "sum(Muon_pt * Jet_pt) > 1"):
        kernel = _kernel(text)
        with pytest.raises(SelectionError, match="different collections"):
            kernel(DATA, N)
        with pytest.raises(SelectionError, match="different collections"):
            evaluate(parse_expression(text), DATA, N)
    # different collections in different reductions are fine
    assert_same(_kernel("sum(Muon_pt) > sum(Jet_pt)")(DATA, N),
                evaluate(parse_expression("sum(Muon_pt) > sum(Jet_pt)"), DATA, N))


def test_generated_source_has_no_user_text(kernel_cache: Path) -> None:
    types = {"Muon_pt": TYPES["Muon_pt"], "xx_secret_name": ColumnType(0, "float")}
    kernel = compile_kernel(parse_expression("count(Muon_pt > 21.25) >= xx_secret_name"), types)
    assert kernel is not None and kernel.names == ("Muon_pt", "xx_secret_name")
    data = {"Muon_pt": DATA["Muon_pt"], "xx_secret_name": DATA["MET_pt"] / 20}
    kernel(data, N)
    files = list(kernel_cache.glob("k*.py"))
    assert files
    for path in files:
        text = path.read_text()
        assert "Muon" not in text and "secret" not in text and "MET" not in text
    assert any("21.25" in path.read_text() for path in files)  # the literal, re-emitted


def test_second_compile_is_a_memo_hit() -> None:
    text = "count(Muon_eta > 1.125) >= 1"
    first = compile_kernel(parse_expression(text), TYPES)
    assert first is not None
    before = jit_seconds()
    first(DATA, N)
    after = jit_seconds()
    assert after > before  # the first call compiled (or loaded) the kernel
    again = compile_kernel(parse_expression(text), TYPES)
    assert again is not None
    assert_same(again(DATA, N), first(DATA, N))
    assert jit_seconds() == after


@pytest.mark.parametrize("text,types", [
    ("-HLT_IsoMu24 > 0", TYPES),  # numpy refuses to negate booleans; evaluate raises
    ("nMuon ** -1", TYPES),  # integers to negative powers: numpy raises
    ("1 + 2", TYPES),  # no column: nothing to gain
    ("x > 1", {"x": ColumnType(2, "float")}),  # nested deeper than one list
    ("nMuon > 100000000000000000000000", TYPES),  # literal beyond int64
])  # fmt: skip
def test_unsupported_returns_none(text: str, types: dict[str, ColumnType]) -> None:
    assert compile_kernel(parse_expression(text), types) is None


_F32 = hnp.arrays(np.float32, 64, elements=st.floats(width=32, allow_nan=True,
                                                      allow_infinity=True))
_I32 = hnp.arrays(np.int32, 64, elements=st.sampled_from(
    [0, 1, -1, 2, -2, 7, -7, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_F32, b=_F32, i=_I32, j=_I32)
def test_numpy_arithmetic_corners(a: np.ndarray, b: np.ndarray, i: np.ndarray,
                                  j: np.ndarray) -> None:
    # floor division, modulo and NaN-propagating minimum at zeros, infinities, NaN,
    # signed zero and integer extremes: the kernels' helpers reproduce numpy exactly.
    types = {"a": ColumnType(0, "float"), "b": ColumnType(0, "float"),
             "i": ColumnType(0, "int"), "j": ColumnType(0, "int")}
    data = {"a": ak.Array(a), "b": ak.Array(b), "i": ak.Array(i), "j": ak.Array(j)}
    for text in ("a // b", "a % b", "i // j", "i % j", "minimum(a, b) + maximum(a, i)",
                 "(a < b) | (a == b) | (i >= a)"):
        got = _kernel(text, types)(data, 64)
        ref = evaluate(parse_expression(text), data, 64)
        assert_same(got, ref)
        if text == "a // b":  # signed zeros too
            np.testing.assert_array_equal(np.signbit(got), np.signbit(ak.to_numpy(ref)))


def test_module_cache_is_keyed_by_source() -> None:
    assert all(len(k) == 32 for k in kernels._MODULES)


def test_literals_keep_numpy_weak_and_strong_dtypes() -> None:
    # float32(30.1) > 30.1 is False in float32 (a bare literal adopts the column's dtype),
    # but True against the float64 scalar that 2 * 15.05 folds to: the kernel must do both.
    met = ak.Array(np.array([30.1, 30.0, 31.0], np.float32))
    for text, want in (("MET_pt > 30.1", [False, False, True]),
                       ("MET_pt > 2 * 15.05", [True, False, True])):
        got = _kernel(text, {"MET_pt": ColumnType(0, "float")})({"MET_pt": met}, 3)
        assert got.tolist() == want
        assert_same(got, evaluate(parse_expression(text), {"MET_pt": met}, 3))
