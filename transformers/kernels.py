"""Numba kernels compiled from the expression IR: the fast path of a selection.

Why: awkward evaluates ``count(Muon_pt > 20) >= 2`` as a chain of whole-array
temporaries; a kernel makes one pass over the flat buffers and allocates only its
output. :func:`transformers.evaluate.evaluate` stays the reference; the kernels
agree with it value for value, and whatever they cannot do is left to it.

Contract: :func:`compile_kernel` gives a :class:`Kernel` for an expression, or None
when the awkward evaluator should be used. Calling the kernel takes the columns of a
chunk, extracts their flat buffers (falling back to the evaluator for layouts the
kernels do not take), asks :mod:`transformers.kernel_source` for the source of the
columns' dtypes, and runs it. The source is written to an on-disk cache
(``$DELIVERY_KERNEL_CACHE``, default ``~/.cache/columnar-delivery/kernels``) and
imported from there with importlib, so numba's own ``cache=True`` applies; the
time spent loading and compiling is :func:`jit_seconds`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numba
import numpy as np

from delivery.errors import SelectionError
from delivery.selection.expr import Expr, names_in
from delivery.selection.types import ColumnType, infer
from transformers.evaluate import evaluate
from transformers.kernel_source import (
    KERNEL_DTYPES,
    NOMINAL_DTYPES,
    KernelSpec,
    build_spec,
    node_count,
)

__all__ = ["Kernel", "compile_kernel", "jit_seconds"]

_MAX_NODES = 2000  # beyond this numba compiles for longer than awkward takes to evaluate

_LOCK = threading.RLock()
_MODULES: dict[str, Any] = {}  # source hash -> numba dispatcher
_COMPILED: set[tuple[str, tuple[Any, ...]]] = set()
_JIT = [0.0]


def jit_seconds() -> float:
    """Seconds this process spent loading and compiling kernels."""
    return _JIT[0]

def _dispatcher(source: str, args: list[Any]) -> Any:
    """The kernel of ``source``, imported from a real file so numba's ``cache=True`` works,
    and compiled for the types of ``args`` (the time both take is JIT time)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    with _LOCK:
        if digest not in _MODULES:
            start = time.perf_counter()
            default = Path.home() / ".cache" / "columnar-delivery" / "kernels"
            root = Path(os.environ.get("DELIVERY_KERNEL_CACHE") or default)
            root.mkdir(parents=True, exist_ok=True)
            path = root / f"k{digest}.py"
            # Rewrite only when absent or different: numba's cache is keyed on the file's mtime.
            if not path.exists() or path.read_text() != source:
                tmp = root / f".k{digest}.{os.getpid()}.{threading.get_ident()}.tmp"
                tmp.write_text(source)
                os.replace(tmp, path)  # atomic: racing workers all write the same text
            name = f"_delivery_kernel_{digest}"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = sys.modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _MODULES[digest] = module.kernel
            _JIT[0] += time.perf_counter() - start
        sig = tuple(numba.typeof(a) for a in args)
        if (digest, sig) not in _COMPILED:
            start = time.perf_counter()
            _MODULES[digest].compile(sig)  # or loads it from numba's on-disk cache
            _JIT[0] += time.perf_counter() - start
            _COMPILED.add((digest, sig))
    return _MODULES[digest]


def _buffers(array: Any, depth: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Flat content and offsets of a column, or None for layouts the kernels do not take."""
    layout = ak.to_layout(array)
    for packed in (False, True):
        if packed:  # ListArray, IndexedArray, ...: one copy into plain form
            layout = ak.to_packed(layout, highlevel=False)
        inner = layout.content if depth == 1 and hasattr(layout, "content") else layout
        if isinstance(inner, ak.contents.NumpyArray) and isinstance(inner.data, np.ndarray) \
                and inner.data.ndim == 1 and inner.dtype.name in KERNEL_DTYPES:
            if depth == 0:
                return inner.data, None
            if isinstance(layout, ak.contents.ListOffsetArray):
                return inner.data, np.asarray(layout.offsets.data)
    return None


class Kernel:
    """A compiled expression: ``kernel(columns, length)`` reads ``names`` and returns
    a numpy array (depth 0) or a jagged awkward array sharing its inputs' counts (depth 1)."""

    def __init__(self, expr: Expr, types: Mapping[str, ColumnType], spec: KernelSpec, depth: int):
        self.expr, self.names, self.depth = expr, spec.names, depth
        self._types = {n: types[n] for n in spec.names}
        self._specs: dict[tuple[str, ...], KernelSpec | None] = {}

    def __call__(self, columns: Mapping[str, ak.Array], length: int) -> np.ndarray | ak.Array:
        bufs: list[tuple[np.ndarray, np.ndarray | None]] = []
        for n in self.names:
            b = _buffers(columns[n], self._types[n].depth)
            if b is None or len(b[0] if b[1] is None else b[1]) != length + (b[1] is not None):
                return self._fallback(columns, length)  # option types, records, ...
            bufs.append(b)
        key = tuple(data.dtype.str for data, _ in bufs)
        if key not in self._specs:
            cols = {n: (self._types[n].depth, d.dtype) for n, (d, _) in zip(self.names, bufs,
                                                                               strict=True)}
            self._specs[key] = build_spec(self.expr, cols, self.depth)
        spec = self._specs[key]
        if spec is None:
            return self._fallback(columns, length)
        offsets = {m: o for m, (_, o) in enumerate(bufs) if o is not None}
        for group in spec.groups:
            counts = [np.diff(offsets[m]) for m in group]
            if not all(np.array_equal(counts[0], c) for c in counts[1:]):
                raise SelectionError("expression combines jagged branches of different "
                                     "collections (their lengths differ within an event)")
        args: list[Any] = [length]
        for data, offs in bufs:
            args += [data] if offs is None else [data, offs]
        out = _dispatcher(spec.source, args)(*args)
        if self.depth == 0:
            return out
        ref = offsets[spec.ref]
        ref = ref - ref[0] if ref[0] else ref  # the kernel wrote its output from index 0
        return ak.Array(ak.contents.ListOffsetArray(ak.index.Index(ref),
                                                    ak.contents.NumpyArray(out)))

    def _fallback(self, columns: Mapping[str, Any], length: int) -> np.ndarray | ak.Array:
        out = evaluate(self.expr, columns, length)
        return ak.to_numpy(out) if self.depth == 0 and isinstance(out, ak.Array) else out

def compile_kernel(expr: Expr, types: Mapping[str, ColumnType]) -> Kernel | None:
    """A kernel for ``expr``, or None when the awkward evaluator should be used instead."""
    names = names_in(expr)
    if not names or any(n not in types or types[n].depth > 1 or types[n].kind not in NOMINAL_DTYPES
                        for n in names):
        return None
    try:
        depth = infer(expr, types, "expression").depth
        if node_count(expr) > _MAX_NODES:
            return None
    except Exception:  # evaluate gives the user the proper error
        return None
    # NanoAOD's float32/int32 stand in for the real dtypes, to refuse what cannot work now.
    nominal = {n: (types[n].depth, NOMINAL_DTYPES[types[n].kind]) for n in names}
    spec = build_spec(expr, nominal, depth)
    return None if spec is None else Kernel(expr, types, spec, depth)
